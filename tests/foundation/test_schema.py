"""The OpenAPI schema is valid, and a schemathesis run against it finds no 500."""

import os

import pytest
import schemathesis
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings

from apps.workspaces.models import Membership, Workspace
from tests.schema_client import SchemaChecker, response_checks

pytestmark = pytest.mark.django_db


def test_manage_py_spectacular_writes_a_schema(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    text = out.read_text()
    for path in (
        "/api/v1/workspaces/{workspace_slug}/tickets/{id}/approve/",
        "/api/v1/workspaces/{workspace_slug}/jobs/{id}/cancel/",
        "/api/v1/workspaces/{workspace_slug}/audit-events/",
    ):
        assert path in text


def test_the_docs_page_is_served(client):
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/schema/").status_code == 200


@pytest.fixture
def fuzz_token(db, django_user_model):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("fuzzer", password="x")
    ws = Workspace.objects.create(slug="acme", name="Acme")
    Membership.objects.create(workspace=ws, user=user, role="owner")
    return Token.objects.create(user=user).key


def _seed(workspace: Workspace, data_root) -> None:
    """Objects of every kind, so list and detail answers carry typed bodies the schema must describe."""
    from apps.datasets.services import register_dataset
    from apps.jobs.models import Job, JobMetric
    from apps.registry.services import register_from_job
    from apps.tickets.models import Ticket
    from apps.tickets.params import validate_params
    from tests.foundation.factories import connected_partner, labelled_csv, shared_dataset

    folder = data_root / workspace.slug
    folder.mkdir(parents=True, exist_ok=True)
    labelled_csv(folder)
    dataset = register_dataset(
        workspace, name="users_labels", uri="users_labels.csv", id_column="id", label_column="label"
    )
    partner = connected_partner(workspace)
    remote = shared_dataset(partner)
    for kind, status in (("psi_vertical_nn", "succeeded"), ("vertical_tree", "pending"), ("psi", "failed")):
        ticket = Ticket.objects.create(
            workspace=workspace, partner=partner, name=f"t-{kind}", kind=kind, role="leader", is_proposer=status != "pending",
            local_dataset=dataset, remote_dataset_id=remote.remote_id, remote_dataset_name=remote.name,
            params=validate_params(kind, {}), status=status,
        )  # fmt: skip
        job = Job.objects.create(
            workspace=workspace, ticket=ticket, role="leader", status=status if status != "pending" else "pending"
        )
        if kind == "psi_vertical_nn":
            split = {"loss": 0.4, "auc": 0.81, "ks": 0.5, "accuracy": None}
            job.result = {
                "psi": {"intersection_size": 18, "input_size": 20, "peer_input_size": 20, "engine": "builtin", "protocol": "ecdh"},
                "train": {"metrics": {"train": split, "validation": split}, "best_epoch": 2, "epochs": 3, "rows": 18,
                          "history": [{"epoch": 1, "train": split}], "model_dir": "/tmp/model"},
            }  # fmt: skip
            job.save()
            for step in (2, 1, 2):  # out of order, and step 2 reported twice
                JobMetric.objects.create(job=job, name="auc", split="validation", step=step, epoch=step, value=0.8)
            JobMetric.objects.create(job=job, side="remote", name="auc", split="validation", step=1, epoch=1, value=0.8)
            register_from_job(job)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_token, settings_data_root):
    _seed(Workspace.objects.get(slug="acme"), settings_data_root)
    """Every operation with generated input, then the stateful phase following the schema's links:
    0 responses >= 500 and 0 responses the schema does not describe (status, content type, body)."""
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    # As Django's test client does: the test's transaction must outlive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        _fuzz(fuzz_token, get_wsgi_application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fuzz(fuzz_token, get_wsgi_application):
    from schemathesis.core.failures import FailureGroup

    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    headers = {"Authorization": f"Token {fuzz_token}"}
    checks = response_checks()
    failures: list[str] = []
    calls: list[int] = []
    examples = int(os.environ.get("FUZZ_EXAMPLES", "6"))
    common = {
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        "database": None,
        "derandomize": not os.environ.get("FUZZ_RANDOM"),  # CI is repeatable; FUZZ_RANDOM=1 explores
    }

    def pin_workspace(case):
        # Generated slugs only find 404s; the fuzzer's own workspace (or one it created) finds the rest.
        slug = (case.path_parameters or {}).get("workspace_slug")
        if slug is not None and not Workspace.objects.filter(slug=slug).exists():
            case.path_parameters = {**case.path_parameters, "workspace_slug": "acme"}

    def check(case, response):
        calls.append(response.status_code)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {failure.title} {response.text[:200]}"
                )

    @settings(max_examples=examples, **common)
    def run(case):
        pin_workspace(case)
        check(case, case.call(headers=headers))

    # First a plain walk: every GET without filters, details on the seeded objects (typed bodies, checked).
    first_id: dict[str, str] = {}
    gets = sorted((r.ok() for r in schema.get_all_operations() if r.ok().method.upper() == "GET"), key=lambda o: o.path)
    for op in gets:
        params = {"workspace_slug": "acme", "slug": "acme", "output_name": "scores"}
        if "{id}" in op.path:
            parent = op.path.split("{id}")[0]
            if parent not in first_id:
                continue
            params["id"] = first_id[parent]
        case = op.Case(path_parameters={k: v for k, v in params.items() if "{" + k + "}" in op.path}, query={})
        response = case.call(headers=headers)
        check(case, response)
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:  # a download: a file, not JSON
            body = None
        items = body.get("results") if isinstance(body, dict) else body
        if isinstance(items, list) and items and isinstance(items[0], dict) and "id" in items[0]:
            first_id[op.path] = str(items[0]["id"])
    assert len(first_id) >= 6, f"the seeded objects are missing from the lists: {sorted(first_id)}"

    for result in schema.get_all_operations():
        given(case=result.ok().as_strategy())(run)()
    stateless = len(calls)

    class Stateful(schema.as_state_machine()):
        def before_call(self, case):
            pin_workspace(case)

        def get_call_kwargs(self, case):
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            check(case, response)

    Stateful.run(
        settings=settings(
            max_examples=int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "15")), stateful_step_count=6, **common
        )
    )
    server_errors = sum(code >= 500 for code in calls)
    print(
        f"schemathesis: {len(calls)} responses ({stateless} stateless, {len(calls) - stateless} stateful), "
        f"{server_errors} >= 500, {len(failures)} violations"
    )
    assert not failures, "\n".join(sorted(set(failures)))
    assert len(calls) - stateless > 20, "the stateful phase made too few calls to mean anything"
    assert stateless > 50, "schemathesis generated too few requests to mean anything"
    assert any(code < 300 for code in calls) and any(400 <= code < 500 for code in calls)


@pytest.fixture
def settings_data_root(settings, tmp_path):
    settings.FEDSITE_DATA_ROOTS = [tmp_path.resolve()]
    return tmp_path


def test_the_flow_checker_names_a_violation_on_a_path_with_parameters(db):
    """The e2e flow's schema checker records an undeclared answer (here a 502 to accept) as a violation
    naming method, path and status; it once raised schemathesis's InvalidSchema instead, hiding the answer."""
    import requests
    from django.core.wsgi import get_wsgi_application

    checker = SchemaChecker(schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application()))
    url = "http://127.0.0.1:1/api/v1/workspaces/beta/partners/accept/"
    response = requests.Response()
    response.request = requests.Request("POST", url, json={"code": "x", "name": "y"}).prepare()
    response.url, response.status_code = url, 502
    response.headers["Content-Type"] = "application/json"
    response._content = b'{"detail": "could not reach 127.0.0.1:9: UNAVAILABLE", "code": "partner_unreachable"}'

    checker.check(response)

    assert checker.seen == {"v1_workspaces_partners_accept_create": 1}
    assert checker.violations, "a 502 is a server error"
    assert all(v.startswith("POST /api/v1/workspaces/beta/partners/accept/ -> 502") for v in checker.violations)
    assert any("partner_unreachable" in v for v in checker.violations)
