"""Stream job kinds: parameters, each side's stream source, the runtime config and version registration."""

from __future__ import annotations

import pytest

from apps.datasets.models import DatasetGrant
from apps.jobs.launch import STEPS_BY_KIND, build_spec
from apps.jobs.launchers.local import LocalLauncher
from apps.jobs.models import Job
from apps.jobs.services import apply_report
from apps.partners.choices import Policy
from apps.peer.models import OutboxMessage
from apps.registry.models import ModelVersion
from apps.registry.services import stream_version_id
from apps.tickets.choices import LONG_RUNNING_KINDS, STREAM_KINDS, JobKind, TicketStatus
from apps.tickets.models import Ticket
from apps.tickets.params import kind_params_schema, validate_params
from apps.tickets.services import receive_proposal
from tests.foundation.test_tickets import TICKETS, proposal_payload, propose
from tests.foundation.test_tickets import setup as setup  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def clicks(data_root):
    folder = data_root / "events" / "clicks"
    folder.mkdir(parents=True)
    return folder


def test_stream_kinds_take_the_stream_group_and_run_until_stopped():
    out = validate_params(JobKind.STREAM_JOIN_TRAIN, {"stream": {"publish_every_blocks": 3}})
    assert out["stream"] == {
        "max_delay_s": 600.0,
        "block_size": 4096,
        "idle_timeout_s": 300.0,
        "publish_every_blocks": 3,
        "publish_every_minutes": 0.0,
    }
    assert "train" in out and "stream" in validate_params(JobKind.STREAM_JOIN, {})
    assert "train" not in validate_params(JobKind.STREAM_JOIN, {})
    assert set(kind_params_schema(JobKind.STREAM_JOIN_TRAIN)["properties"]) == {"share_metrics", "stream", "train"}
    assert set(STREAM_KINDS) <= set(LONG_RUNNING_KINDS)
    assert STEPS_BY_KIND[JobKind.STREAM_JOIN_TRAIN] == ["stream_join", "stream_train"]


def test_proposing_names_this_sides_folder_which_the_partner_never_sees(api, setup, clicks):
    r = propose(
        api,
        setup,
        kind=JobKind.STREAM_JOIN_TRAIN,
        stream_source={"kind": "folder", "location": "events/clicks"},
        params={"stream": {"publish_every_blocks": 2}},
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["stream_source"] == {
        "kind": "folder",
        "location": "events/clicks",
        "path": str(clicks),
        "time_column": "event_time",
    }
    payload = OutboxMessage.objects.get(kind="ticket.proposed").payload
    assert payload["params"]["stream"]["publish_every_blocks"] == 2
    assert "events/clicks" not in str(payload) and "stream_source" not in payload


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        (None, "stream_source", "name where your live events arrive"),
        ({"kind": "folder", "location": "../globex"}, "stream_source.location", "'..' is not allowed"),
        ({"kind": "folder", "location": "/etc"}, "stream_source.location", "outside this workspace's data folders"),
        ({"kind": "folder", "location": "events/nope"}, "stream_source.location", "does not exist"),
        ({"kind": "folder", "location": "users_labels.csv"}, "stream_source.location", "is not a folder"),
        ({"kind": "nats", "location": "clicks.*", "stream": "C"}, "stream_source.location", "is not a NATS subject"),
        ({"kind": "nats", "location": "clicks"}, "stream_source.stream", "the JetStream stream holding the subject"),
        ({"kind": "folder", "location": "events/clicks", "stream": "C"}, "stream_source.stream", "only a NATS"),
        ({"kind": "kafka", "location": "clicks"}, "stream_source.kind", "must be one of folder, nats"),
        ({"kind": "folder", "location": "events/clicks", "url": "x"}, "stream_source", "unknown keys: url"),
        ({"kind": "folder", "location": "events/clicks", "time_column": 3}, "stream_source.time_column", "time column"),
        ("events/clicks", "stream_source", "must be an object"),
    ],
)
def test_a_bad_stream_source_is_refused_and_nothing_is_created(api, setup, clicks, source, field, words):
    before = Ticket.objects.count()
    r = propose(api, setup, kind=JobKind.STREAM_JOIN_TRAIN, stream_source=source)
    assert r.status_code == 400, r.content
    assert words in r.json()[field][0], r.json()
    assert Ticket.objects.count() == before and not OutboxMessage.objects.exists()


def test_only_stream_kinds_take_a_source(api, setup, clicks):
    r = propose(api, setup, stream_source={"kind": "folder", "location": "events/clicks"})
    assert r.status_code == 400 and "only stream job kinds" in r.json()["stream_source"][0]


def test_the_receiver_names_its_source_when_it_approves_even_under_always_allow(api, setup, clicks):
    setup["partner"].policies = {JobKind.STREAM_JOIN_TRAIN: Policy.ALWAYS_ALLOW}
    setup["partner"].save()
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    payload = proposal_payload(setup, setup["features"].id, kind=JobKind.STREAM_JOIN_TRAIN)
    ticket = receive_proposal(setup["acme"], setup["partner"], payload)
    assert ticket.status == TicketStatus.PENDING  # only a person can say where its events arrive
    url = f"{TICKETS}{ticket.id}/approve/"
    r = api("carol").post(url, {}, format="json")
    assert r.status_code == 400 and "name where your live events arrive" in r.json()["stream_source"][0]
    assert not Job.objects.filter(ticket=ticket).exists()
    source = {"kind": "nats", "location": "acme.conversions", "stream": "CONVERSIONS"}
    r = api("carol").post(url, {"stream_source": source}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["stream_source"]["location"] == "acme.conversions"
    assert Job.objects.filter(ticket=ticket).count() == 1


def _stream_job(api, setup, clicks) -> Job:
    ticket_id = propose(
        api, setup, kind=JobKind.STREAM_JOIN_TRAIN, stream_source={"kind": "folder", "location": "events/clicks"}
    ).json()["id"]
    ticket = Ticket.objects.get(pk=ticket_id)
    ticket.status = TicketStatus.APPROVED
    ticket.save()
    from apps.jobs.services import start_ticket_run

    return start_ticket_run(ticket)


def test_the_runtime_config_runs_join_and_training_with_no_deadline(api, setup, clicks, settings):
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    job = _stream_job(api, setup, clicks)
    spec = build_spec(job, LocalLauncher(), 17010)
    assert spec.timeout_s == 0 and spec.port_count == 2
    config = spec.config
    assert config["steps"] == ["stream_join", "stream_train"]
    assert config["data"]["path"] == str(clicks) and config["data"]["label_column"] == "label"
    assert config["stream"] == {
        "source": "folder",
        "time_column": "event_time",
        "max_delay_s": 600.0,
        "max_batch_events": 4096,
        "idle_timeout_s": 300.0,
        "publish_every_blocks": 10,
        "publish_every_minutes": 0.0,
    }
    assert config["train"]["batch_size"] == 64
    # both steps accept exactly this config
    from runtime.config import parse_config
    from runtime.stream.params import parse_stream_params
    from runtime.stream.train import parse_stream_train_params

    parsed = parse_config({**config, "output_dir": "x", "tls": None, "allow_insecure": True})
    assert parsed.steps == ("stream_join", "stream_train") and parsed.data.path == str(clicks)
    assert parse_stream_params(parsed.stream, job_id=parsed.job_id, role=parsed.role).max_delay_s == 600.0
    assert parse_stream_train_params(parsed.stream).publish_every_blocks == 10


def test_a_nats_source_becomes_the_joins_jetstream_consumer(api, setup, settings):
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    source = {"kind": "nats", "location": "acme.clicks", "stream": "CLICKS", "time_column": "ts"}
    r = propose(api, setup, kind=JobKind.STREAM_JOIN, stream_source=source)
    assert r.status_code == 201, r.content
    ticket = Ticket.objects.get(pk=r.json()["id"])
    ticket.status = TicketStatus.APPROVED
    ticket.save()
    from apps.jobs.services import start_ticket_run

    config = build_spec(start_ticket_run(ticket), LocalLauncher(), 17012).config
    assert config["steps"] == ["stream_join"] and config["data"]["path"] == ""
    assert config["stream"]["source"] == "nats" and config["stream"]["time_column"] == "ts"
    assert config["stream"]["nats"] == {"url": "nats://127.0.0.1:4222", "stream": "CLICKS", "subject": "acme.clicks"}
    assert "publish_every_blocks" not in config["stream"]
    from runtime.config import parse_config
    from runtime.stream.params import parse_stream_params

    parsed = parse_config({**config, "output_dir": "x", "tls": None, "allow_insecure": True})
    assert parse_stream_params(parsed.stream, job_id=parsed.job_id, role=parsed.role).nats.subject == "acme.clicks"


def test_each_published_version_is_registered_with_its_parent(api, setup, clicks):
    job = _stream_job(api, setup, clicks)
    for n in (1, 2):
        apply_report(
            job,
            [
                {
                    "type": "result",
                    "stage": "stream_version",
                    "data": {"version": n, "model_dir": f"/x/v{n}", "metrics": {"progressive": {"auc": 0.6 + n / 10}}},
                }
            ],
        )
    v1, v2 = (ModelVersion.objects.get(pk=stream_version_id(job.id, n)) for n in (1, 2))
    assert v1.parent is None and v2.parent == v1 and v2.sequence == 2
    assert v2.lineage["parent"] == str(v1.id) and v2.metrics["progressive"]["auc"] == pytest.approx(0.8)
    # a report delivered twice registers nothing new
    apply_report(job, [{"type": "result", "stage": "stream_version", "data": {"version": 2, "model_dir": "/x/v2"}}])
    assert ModelVersion.objects.filter(job=job).count() == 2


def _report_stats(job: Job, *, events_read: float, stage: str = "stream join") -> None:
    stats = {"events_read": events_read, "matched": events_read * 0.7, "match_rate": 0.7, "late_events": 3.0}
    apply_report(
        job,
        [{"type": "progress", "value": 0.0, "stage": stage}]
        + [{"type": "metric", "name": k, "value": v, "step": 1, "split": "stream"} for k, v in stats.items()],
    )


def test_the_stream_page_shows_both_sides_waiting_for_data_and_the_versions(api, setup, clicks, users):
    from django.test import Client

    from apps.jobs.services import apply_remote_job_state

    job = _stream_job(api, setup, clicks)
    _report_stats(job, events_read=1000, stage="waiting for data")
    # the partner's counters travel with its job.progress message (operational, like progress)
    sent = OutboxMessage.objects.filter(kind="job.progress").order_by("-id").first()
    assert sent is not None and {m["name"] for m in sent.payload["metrics"]} >= {"events_read", "match_rate"}
    apply_remote_job_state(
        job, {"status": "running", "metrics": [dict(m, value=m["value"] * 2) for m in sent.payload["metrics"]]}
    )
    apply_report(
        job,
        [
            {
                "type": "result",
                "stage": "stream_version",
                "data": {"version": 1, "model_dir": "/x/v1", "metrics": {"progressive": {"auc": 0.71}}},
            }
        ],
    )
    status = api("dave").get(f"/api/v1/workspaces/acme/jobs/{job.id}/").json()["stream"]
    assert status["waiting_for_data"] is True and status["local"]["events_read"] == 1000.0
    assert status["partner"]["events_read"] == 2000.0 and status["partner"]["match_rate"] == 1.4
    assert status["versions"] == [
        {
            "id": str(stream_version_id(job.id, 1)),
            "version": 1,
            "auc": 0.71,
            "created_at": status["versions"][0]["created_at"],
        }
    ]
    client = Client()
    client.force_login(users["dave"])
    page = client.get(f"/w/acme/jobs/{job.pk}/").content.decode()
    assert "Waiting for data." in page and "This is not a failure" in page and "Stop job" in page
    assert "folder events/clicks" in page and 'data-stream-field="partner.events_read"' in page
    live = client.get(f"/w/acme/jobs/{job.pk}/live").json()["job"]["stream"]
    assert live["versions"][0]["version"] == 1
    # a new report of events: no longer waiting
    _report_stats(job, events_read=1500)
    assert api("dave").get(f"/api/v1/workspaces/acme/jobs/{job.id}/").json()["stream"]["waiting_for_data"] is False
    # the model page shows the lineage
    apply_report(
        job,
        [
            {
                "type": "result",
                "stage": "stream_version",
                "data": {"version": 2, "model_dir": "/x/v2", "metrics": {"progressive": {"auc": 0.74}}},
            }
        ],
    )
    v2 = client.get(f"/w/acme/models/{stream_version_id(job.id, 2)}/").content.decode()
    assert "Lineage: versions of this continual training" in v2 and "v2 (this version)" in v2
    assert f"/w/acme/models/{stream_version_id(job.id, 1)}/" in v2 and "lineage-data" in v2
    body = api("dave").get(f"/api/v1/workspaces/acme/model-versions/{stream_version_id(job.id, 2)}/").json()
    assert body["parent"] == str(stream_version_id(job.id, 1)) and body["sequence"] == 2


def test_the_approve_form_takes_the_receivers_source(setup, clicks, users):
    from django.test import Client

    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    ticket = receive_proposal(
        setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id, kind=JobKind.STREAM_JOIN_TRAIN)
    )
    client = Client()
    client.force_login(users["carol"])
    page = client.get(f"/w/acme/tickets/{ticket.pk}/").content.decode()
    assert 'name="stream_source_location"' in page
    url = f"/w/acme/tickets/{ticket.pk}/approve"
    client.post(url, {"stream_source_kind": "folder", "stream_source_location": "../globex"})
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.PENDING and not ticket.stream_source
    client.post(url, {"stream_source_kind": "folder", "stream_source_location": "events/clicks"})
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.APPROVED and ticket.stream_source["path"] == str(clicks)


@pytest.mark.parametrize("end", ["minimum", "maximum"])
def test_both_stream_steps_accept_every_ticket_key_at_its_bounds(api, setup, clicks, settings, end):
    from apps.tickets.params import GROUPS
    from runtime.config import parse_config
    from runtime.stream.params import parse_stream_params
    from runtime.stream.train import parse_stream_train_params

    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    job = _stream_job(api, setup, clicks)
    values = {k: getattr(p, end) for k, p in GROUPS["stream"].items()}
    values = {k: int(v) if GROUPS["stream"][k].type == "integer" else v for k, v in values.items()}
    job.ticket.params = validate_params(JobKind.STREAM_JOIN_TRAIN, {"stream": values})
    job.ticket.save()
    config = build_spec(job, LocalLauncher(), 17014).config
    parsed = parse_config({**config, "output_dir": "x", "tls": None, "allow_insecure": True})
    join = parse_stream_params(parsed.stream, job_id=parsed.job_id, role=parsed.role)
    train = parse_stream_train_params(parsed.stream)
    assert join.max_delay_s == values["max_delay_s"] and join.max_batch_events == values["block_size"]
    assert join.idle_timeout_s == values["idle_timeout_s"]
    assert train.publish_every_blocks == values["publish_every_blocks"]
    assert train.publish_every_minutes == values["publish_every_minutes"]
