"""The API says what it does: ticket params per kind, typed JSON fields, every error status, the metrics list."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from apps.audit.models import AuditEvent, Source
from apps.jobs.choices import JobStatus
from apps.jobs.models import Job, JobMetric
from apps.jobs.services import apply_remote_job_state, apply_report
from apps.tickets.params import GROUPS, KIND_GROUPS
from apps.tickets.services import receive_proposal
from tests.foundation.test_tickets import proposal_payload, propose, setup  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def ref(prop: dict) -> str:
    """The component a property points at (drf-spectacular wraps a read-only $ref in allOf)."""
    return (prop.get("$ref") or prop["allOf"][0]["$ref"]).split("/")[-1]


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_create_body_is_one_of_the_kinds_with_their_typed_params(schema):
    comps = schema["components"]["schemas"]
    body = comps["TicketCreateRequest"]
    assert body["discriminator"]["propertyName"] == "kind"
    assert set(body["discriminator"]["mapping"]) == set(KIND_GROUPS)
    variant = comps[body["discriminator"]["mapping"]["psi_vertical_nn"].split("/")[-1]]
    assert variant["properties"]["kind"]["enum"] == ["psi_vertical_nn"]
    params = comps[variant["properties"]["params"]["$ref"].split("/")[-1]]
    assert set(params["properties"]) == {"share_metrics", "psi", "train"}
    assert params["additionalProperties"] is False
    train = comps[params["properties"]["train"]["$ref"].split("/")[-1]]
    assert set(train["properties"]) == set(GROUPS["train"])
    epochs = train["properties"]["epochs"]
    assert (
        epochs["type"] == "integer"
        and epochs["minimum"] == 1
        and epochs["default"] == GROUPS["train"]["epochs"].default
    )
    assert "selu" in train["properties"]["activation"]["enum"]


def test_json_fields_are_typed_and_the_validation_auc_is_findable(schema):
    comps = schema["components"]["schemas"]
    result = comps["Job"]["properties"]["result"]
    assert ref(result) == "JobResult" and result["readOnly"] is True
    summary = comps["TrainingSummary"]["properties"]
    assert summary["metrics"]["$ref"].endswith("/TrainingMetrics")
    assert comps["TrainingMetrics"]["properties"]["validation"]["$ref"].endswith("/SplitMetrics")
    assert "auc" in comps["SplitMetrics"]["properties"]
    assert ref(comps["ModelVersion"]["properties"]["metrics"]) == "TrainingSummary"
    assert ref(comps["ModelVersion"]["properties"]["lineage"]) == "ModelLineage"
    assert ref(comps["Partner"]["properties"]["policies"]) == "PartnerPolicies"
    assert ref(comps["PatchedPartnerPolicyRequest"]["properties"]["policies"]) == "PartnerPolicies"
    assert set(comps["PartnerPolicies"]["properties"]) == {*KIND_GROUPS, "model_promotion"}
    assert comps["Dataset"]["properties"]["schema"]["items"]["$ref"].endswith("/DatasetColumn")
    assert comps["Dataset"]["properties"]["stats"]["additionalProperties"]["$ref"].endswith("/ColumnStats")
    assert "anyOf" in comps["Ticket"]["properties"]["params"]


def test_every_error_status_is_declared_and_the_audit_sources_are_complete(schema):
    approve = schema["paths"]["/api/v1/workspaces/{workspace_slug}/tickets/{id}/approve/"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "409", "415", "429"} <= set(approve)
    listing = schema["paths"]["/api/v1/workspaces/{workspace_slug}/tickets/"]["get"]["responses"]
    assert {"200", "400", "401", "403", "404", "429"} <= set(listing)
    assert set(schema["components"]["schemas"]["SourceEnum"]["enum"]) == set(Source.values) >= {"launcher"}
    reject = schema["components"]["schemas"]["RejectRequest"]
    assert reject["required"] == ["reason"]


def test_created_objects_link_to_their_operations(schema):
    created = schema["paths"]["/api/v1/workspaces/{workspace_slug}/tickets/"]["post"]["responses"]["201"]
    links = {link["operationId"] for link in created["links"].values()}
    assert "v1_workspaces_tickets_approve_create" in links and "v1_workspaces_tickets_retrieve" in links


def test_an_unknown_param_key_answers_400_listing_the_allowed_keys(api, setup):  # noqa: F811
    response = propose(api, setup, params={"train": {"epoch": 3}})
    assert response.status_code == 400
    message = response.json()["params.train"][0]
    assert "unknown keys: epoch" in message and "epochs" in message and "max_categories" in message
    ok = propose(api, setup, params={"train": {"activation": "selu", "max_categories": 8, "share_metrics": False}})
    assert ok.status_code == 201, ok.content
    assert ok.json()["params"]["train"]["activation"] == "selu"
    assert ok.json()["params"]["share_metrics"] is False


def test_the_metrics_list_is_sorted_by_step_each_point_once_per_side_and_filtered(api, setup):  # noqa: F811
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    job = Job.objects.create(workspace=setup["acme"], ticket=ticket, role=ticket.role)
    for step, value in ((2, 0.7), (1, 0.6), (2, 0.75)):  # out of order; step 2 reported twice (a retried report)
        JobMetric.objects.create(job=job, name="auc", split="validation", step=step, epoch=step, value=value)
    JobMetric.objects.create(job=job, side="remote", name="auc", split="validation", step=1, epoch=1, value=0.6)
    JobMetric.objects.create(job=job, name="loss", split="train", step=1, epoch=1, value=0.5)
    url = f"/api/v1/workspaces/acme/jobs/{job.id}/metrics/"
    points = api("bob").get(url).json()
    assert isinstance(points, list)  # a plain list, as declared
    assert [(p["step"], p["side"], p["name"]) for p in points] == [
        (1, "local", "auc"), (1, "local", "loss"), (1, "remote", "auc"), (2, "local", "auc"),
    ]  # fmt: skip
    assert points[-1]["value"] == 0.75  # the latest report of a point wins
    only = api("bob").get(url, {"name": "auc", "split": "validation", "side": "local"}).json()
    assert [(p["step"], p["value"]) for p in only] == [(1, 0.6), (2, 0.75)]
    bad = api("bob").get(url, {"side": "theirs"})
    assert bad.status_code == 400 and "side" in bad.json()


def test_a_point_reported_again_replaces_the_stored_one(setup):  # noqa: F811
    """A long-running job re-reports its counters within one step (a stream between blocks), a retried post
    repeats a batch, a redelivered message repeats the partner's points: rows grow with steps, not with time."""
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    job = Job.objects.create(workspace=setup["acme"], ticket=ticket, role=ticket.role, status=JobStatus.RUNNING)
    for second in range(50):  # one block committed, its counters reported every second
        apply_report(job, [{"type": "metric", "name": "events_read", "split": "stream", "step": 1, "value": second}])
    apply_report(job, [{"type": "metric", "name": "events_read", "split": "stream", "step": 2, "value": 99}])
    apply_report(job, [{"type": "metric", "name": "lag_s", "split": "stream", "value": 3.0}] * 3)  # no step
    apply_report(job, [{"type": "metric", "name": "lag_s", "split": "stream", "value": 1.0}])
    rows = sorted((m.name, m.step, m.value) for m in job.metrics.all())
    assert rows == [("events_read", 1, 49.0), ("events_read", 2, 99.0), ("lag_s", None, 1.0)]
    state = {
        "status": "running",
        "metrics": [{"name": "auc", "split": "validation", "step": 1, "epoch": 1, "value": 0.7}],
    }
    for _ in range(3):
        apply_remote_job_state(job, state)
    assert job.metrics.filter(side="remote").count() == 1 and job.metrics.filter(side="local").count() == 3


def test_the_launcher_source_is_a_known_audit_source():
    assert AuditEvent._meta.get_field("source").choices is not None
    assert "launcher" in dict(AuditEvent._meta.get_field("source").choices)
