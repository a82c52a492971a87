"""The `serve` job kind on one installation: ticket checks, the runtime config, predict's answers
when nothing serves, and the job page's serving panel (the live flow: tests/launcher/test_serving_two_installations.py)."""

from __future__ import annotations

import time
import uuid

import pytest

from apps.core.errors import ServiceError
from apps.jobs.launch import build_spec
from apps.jobs.launchers.local import LocalLauncher
from apps.jobs.models import Job, JobMetric
from apps.registry.choices import Stage
from apps.registry.services import set_stage
from apps.registry.serving import serving_token
from apps.tickets.choices import LONG_RUNNING_KINDS, SERVICE_KINDS, JobKind, TicketStatus
from apps.tickets.services import propose_ticket, receive_proposal


def _serve_ticket(world, mv_id: str):
    return propose_ticket(
        world["acme"],
        partner=world["partner"],
        kind="serve",
        local_dataset=world["labels"],
        remote_dataset=world["remote"],
        params={"serve": {"model_version": mv_id, "deadline_ms": 150}},
    )


def test_only_a_production_model_version_of_this_partner_can_be_served(world) -> None:
    with pytest.raises(ServiceError) as e:
        _serve_ticket(world, str(world["mv"].id))
    assert e.value.field == "params.serve.model_version" and "promote it to production first" in e.value.message
    for bad, text in (
        ("", "name the model version"),
        ("nope", "not a model version id"),
        (str(uuid.uuid4()), "no model version"),
    ):
        with pytest.raises(ServiceError) as e:
            _serve_ticket(world, bad)
        assert text in e.value.message
    set_stage(world["mv"], Stage.PRODUCTION)
    ticket = _serve_ticket(world, str(world["mv"].id))
    assert ticket.kind == JobKind.SERVE and ticket.role == world["mv"].role == "leader"
    assert ticket.params["serve"] == {"model_version": str(world["mv"].id), "deadline_ms": 150.0, "max_ids": 1000}
    assert JobKind.SERVE in LONG_RUNNING_KINDS and JobKind.SERVE in SERVICE_KINDS


def test_a_received_serve_ticket_for_a_model_this_side_lacks_is_refused(world) -> None:
    ticket = receive_proposal(
        world["acme"],
        world["partner"],
        {
            "ticket_id": str(uuid.uuid4()),
            "name": "serve it",
            "kind": "serve",
            "proposer_role": "follower",
            "proposer_dataset": {"id": str(uuid.uuid4()), "name": "beta_serving"},
            "receiver_dataset_id": str(world["features"].id),
            "params": {"serve": {"model_version": str(uuid.uuid4())}},
        },
    )
    assert ticket.status == TicketStatus.REJECTED and "no model version" in ticket.decision_comment


def test_a_serve_job_runs_without_deadline_with_its_half_and_token(world, settings, tmp_path) -> None:
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    settings.FEDSITE_JOBS_DIR = tmp_path / "jobs"
    set_stage(world["mv"], Stage.PRODUCTION)
    ticket = _serve_ticket(world, str(world["mv"].id))
    job = Job.objects.create(workspace=world["acme"], ticket=ticket, role=ticket.role)
    spec = build_spec(job, LocalLauncher(), 17123)
    assert spec.timeout_s == 0 and spec.keep_running  # no deadline; restarted if it dies
    assert spec.config["steps"] == ["serve"]
    serve = spec.config["serve"]
    assert serve["model_dir"] == world["mv"].artifact_uri and serve["deadline_ms"] == 150.0
    assert serve["api_address"] == "127.0.0.1:0" and serve["api_token"] == serving_token(job)
    assert len(serve["api_token"]) == 64 and serving_token(job) != serving_token(world["job"])


def test_predict_answers_why_it_cannot(world, api) -> None:
    mv = world["mv"]
    url = f"/api/v1/workspaces/acme/model-versions/{mv.id}/predict"
    r = api("dave").post(url, {"ids": ["u1"]}, format="json")
    assert r.status_code == 503 and "is not being served" in r.json()["detail"] and r.json()["code"] == "unavailable"
    set_stage(mv, Stage.PRODUCTION)
    ticket = _serve_ticket(world, str(mv.id))
    job = Job.objects.create(workspace=world["acme"], ticket=ticket, role=ticket.role, status="running")
    r = api("dave").post(url, {"ids": ["u1"]}, format="json")
    assert r.status_code == 503 and "starting" in r.json()["detail"]
    job.result = {"serve": {"api_address": "127.0.0.1:9"}}  # nothing listens there
    job.save()
    t0 = time.monotonic()
    r = api("dave").post(url, {"ids": ["u1"]}, format="json")
    assert r.status_code == 503 and "did not answer" in r.json()["detail"]
    assert time.monotonic() - t0 < 5
    for body, text in (
        ({"ids": []}, "non-empty"),
        ({"ids": [{"x": 1}]}, "string"),
        ({"ids": ["u1"], "features": {"u2": {}}}, "not in ids"),
    ):
        r = api("dave").post(url, body, format="json")
        assert r.status_code == 400 and text in r.content.decode(), r.content
    assert api("bob").post(url, {"ids": ["u1"]}, format="json").status_code == 403  # viewers cannot
    other = api("charlie").post(
        f"/api/v1/workspaces/globex/model-versions/{mv.id}/predict", {"ids": ["u1"]}, format="json"
    )
    assert other.status_code == 404


def test_the_job_page_shows_requests_latency_and_the_hourly_audit_of_both_sides(world, browser_client) -> None:
    set_stage(world["mv"], Stage.PRODUCTION)
    ticket = _serve_ticket(world, str(world["mv"].id))
    job = Job.objects.create(workspace=world["acme"], ticket=ticket, role=ticket.role, status="running")
    hour = int(time.time() // 3600)
    JobMetric.objects.bulk_create(
        [
            JobMetric(job=job, name="predictions", split="serve", step=hour - 1, epoch=hour - 1, value=1200),
            JobMetric(job=job, name="predictions", split="serve", step=hour, epoch=hour, value=345),
            JobMetric(job=job, name="requests", split="serve", step=hour, epoch=hour, value=1545),
            JobMetric(job=job, name="latency_p99_ms", split="serve", step=hour, epoch=hour, value=12.34),
            JobMetric(job=job, side="remote", name="predictions", split="serve", step=hour, epoch=hour, value=340),
        ]
    )
    page = browser_client("bob").get(f"/w/acme/jobs/{job.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Predictions per hour (audit)" in html and "1545" in html and "12.3 ms" in html
    assert ">345<" in html and ">340<" in html and ">1200<" in html
    assert f"/api/v1/workspaces/acme/model-versions/{world['mv'].id}/predict" in html
    plain = browser_client("bob").get(f"/w/acme/jobs/{world['job'].pk}/").content.decode()
    assert "Predictions per hour" not in plain
    # The page polls /live: it carries the serving figures the panel's cells (data-serve) show.
    assert 'data-serve="local.latency_p99_ms"' in html
    JobMetric.objects.create(job=job, name="requests", split="serve", step=hour, epoch=hour, value=1600)
    live = browser_client("bob").get(f"/w/acme/jobs/{job.pk}/live").json()
    assert live["serving"]["local"]["requests"] == 1600 and live["serving"]["local"]["latency_p99_ms"] == 12.34
    assert live["serving"]["remote"] == {"predictions": 340}
    assert "serving" not in browser_client("bob").get(f"/w/acme/jobs/{world['job'].pk}/live").json()


def test_revoking_the_grant_of_the_serving_dataset_stops_serving(world) -> None:
    from apps.datasets.models import DatasetGrant
    from apps.datasets.services import revoke_grant

    set_stage(world["mv"], Stage.PRODUCTION)
    ticket = propose_ticket(
        world["acme"],
        partner=world["partner"],
        kind="serve",
        local_dataset=world["features"],
        remote_dataset=world["remote"],
        params={"serve": {"model_version": str(world["mv"].id)}},
    )
    job = Job.objects.create(workspace=world["acme"], ticket=ticket, role=ticket.role, status="running")
    other = world["job"]  # a training job on another dataset keeps running
    revoke_grant(DatasetGrant.objects.get(dataset=world["features"], partner=world["partner"]))
    job.refresh_from_db()
    other.refresh_from_db()
    assert job.status == "cancelled" and "grant of dataset users_features" in job.error
    assert other.status == "running"
