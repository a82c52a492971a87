"""Batch scoring tickets (`score`, `psi_score`) and job outputs on one installation: the model-version checks
at proposal, receipt and launch, the runtime config, and the outputs API (list, download, register)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from apps.core.errors import ServiceError
from apps.datasets.models import Dataset
from apps.jobs.launch import build_spec
from apps.jobs.launchers.base import LaunchError
from apps.jobs.launchers.local import LocalLauncher
from apps.jobs.models import Job
from apps.jobs.services import set_job_status
from apps.registry.choices import Stage
from apps.registry.services import set_stage
from apps.tickets.choices import JobKind, TicketStatus
from apps.tickets.services import propose_ticket, receive_proposal
from tests.foundation.factories import connected_partner

JOBS = "/api/v1/workspaces/acme/jobs"


def _score_ticket(world, mv_id: str, kind: str = "score", partner=None):
    return propose_ticket(
        world["acme"],
        partner=partner or world["partner"],
        kind=kind,
        local_dataset=world["labels"],
        remote_dataset=world["remote"],
        params={"score": {"model_version": mv_id, "batch_size": 512}},
    )


def _received(world, mv_id: str, kind: str = "score"):
    return receive_proposal(
        world["acme"],
        world["partner"],
        {
            "ticket_id": str(uuid.uuid4()),
            "name": "score it",
            "kind": kind,
            "proposer_role": "follower",
            "proposer_dataset": {"id": str(uuid.uuid4()), "name": "beta_new_users"},
            "receiver_dataset_id": str(world["features"].id),
            "params": {"score": {"model_version": mv_id}},
        },
    )


def test_a_score_ticket_names_a_version_of_this_partner_that_is_not_archived(world) -> None:
    mv = world["mv"]
    for kind in ("score", "psi_score"):
        ticket = _score_ticket(world, str(mv.id), kind)
        assert ticket.kind == kind and ticket.role == mv.role == "leader"
        assert ticket.params["score"] == {"model_version": str(mv.id), "batch_size": 512}
    assert "psi" in _score_ticket(world, str(mv.id), "psi_score").params
    for bad, text in (
        ("", "name the model version to score"),
        ("nope", "not a model version id"),
        (str(uuid.uuid4()), "no model version"),
    ):
        with pytest.raises(ServiceError) as e:
            _score_ticket(world, bad)
        assert e.value.field == "params.score.model_version" and text in e.value.message
    other = connected_partner(world["acme"], name="Gamma")
    from tests.foundation.factories import shared_dataset

    with pytest.raises(ServiceError) as e:
        propose_ticket(
            world["acme"],
            partner=other,
            kind="score",
            local_dataset=world["labels"],
            remote_dataset=shared_dataset(other),
            params={"score": {"model_version": str(mv.id)}},
        )
    assert "trained with another partner" in e.value.message
    set_stage(mv, Stage.ARCHIVED)
    with pytest.raises(ServiceError) as e:
        _score_ticket(world, str(mv.id))
    assert "is archived" in e.value.message


def test_the_api_refuses_a_score_proposal_on_an_unknown_version_with_a_400(world, api) -> None:
    r = api("alice").post(
        "/api/v1/workspaces/acme/tickets/",
        {
            "partner": str(world["partner"].id),
            "kind": "score",
            "local_dataset": str(world["labels"].id),
            "remote_dataset": str(world["remote"].id),
            "params": {"score": {"model_version": str(uuid.uuid4())}},
        },
        format="json",
    )
    assert r.status_code == 400 and "no model version" in r.json()["params.score.model_version"][0]


def test_a_received_score_ticket_for_a_version_this_side_lacks_or_archived_is_refused(world) -> None:
    ticket = _received(world, str(uuid.uuid4()))
    assert ticket.status == TicketStatus.REJECTED and "no model version" in ticket.decision_comment
    set_stage(world["mv"], Stage.ARCHIVED)
    ticket = _received(world, str(world["mv"].id), "psi_score")
    assert ticket.status == TicketStatus.REJECTED and "is archived" in ticket.decision_comment
    # This side holds the leader's half, but the proposer claims to lead: refused as well.
    set_stage(world["mv"], Stage.CANDIDATE)
    follower = receive_proposal(
        world["acme"],
        world["partner"],
        {
            "ticket_id": str(uuid.uuid4()),
            "kind": "score",
            "proposer_role": "leader",
            "proposer_dataset": {"id": str(uuid.uuid4()), "name": "x"},
            "receiver_dataset_id": str(world["features"].id),
            "params": {"score": {"model_version": str(world["mv"].id)}},
        },
    )
    assert follower.status == TicketStatus.REJECTED and "holds the leader's half" in follower.decision_comment


def test_a_score_job_runs_the_score_step_on_its_half(world, settings, tmp_path) -> None:
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    settings.FEDSITE_JOBS_DIR = tmp_path / "jobs"
    for kind, steps in ((JobKind.SCORE, ["score"]), (JobKind.PSI_SCORE, ["psi", "score"])):
        ticket = _score_ticket(world, str(world["mv"].id), kind)
        job = Job.objects.create(workspace=world["acme"], ticket=ticket, role=ticket.role)
        spec = build_spec(job, LocalLauncher(), 17123)
        assert spec.config["steps"] == steps and spec.timeout_s > 0 and not spec.keep_running
        assert spec.config["score"] == {"model_dir": world["mv"].artifact_uri, "batch_size": 512}
    # Archived between approval and launch: the launch fails naming why.
    set_stage(world["mv"], Stage.ARCHIVED)
    with pytest.raises(LaunchError, match="cannot score: .*archived"):
        build_spec(job, LocalLauncher(), 17123)


@pytest.fixture
def finished(world, tmp_path):
    """A succeeded score job of the leader whose runtime left both outputs in its folder."""
    out = tmp_path / "jobs" / "j1" / "leader"
    (out / "psi").mkdir(parents=True)
    (out / "score").mkdir(parents=True)
    (out / "psi" / "aligned.csv").write_text("user_id,age,clicked\nu1,21,1\nu2,22,0\nu3,23,1\n")
    (out / "score" / "scores.csv").write_text("user_id,score\nu1,0.75\nu2,0.125\nu3,0.5\n")
    ticket = _score_ticket(world, str(world["mv"].id), JobKind.PSI_SCORE)
    job = Job.objects.create(
        workspace=world["acme"],
        ticket=ticket,
        role=ticket.role,
        status="running",
        handle={"backend": "local", "output_dir": str(out)},
    )
    return job, out


def test_the_job_lists_and_downloads_this_sides_outputs(world, api, finished) -> None:
    job, out = finished
    r = api("bob").get(f"{JOBS}/{job.id}/outputs/")
    assert r.status_code == 200
    assert [(o["name"], o["kind"], o["size_bytes"]) for o in r.json()] == [
        ("aligned", "psi_aligned", (out / "psi" / "aligned.csv").stat().st_size),
        ("scores", "scores", (out / "score" / "scores.csv").stat().st_size),
    ]
    assert r.json()[1]["path"] == str(out / "score" / "scores.csv")
    for _ in range(2):
        r = api("bob").get(f"{JOBS}/{job.id}/outputs/scores/download/")
        assert r.status_code == 200 and r["Content-Type"] == "text/csv"
        assert "attachment" in r["Content-Disposition"]
        assert b"".join(r.streaming_content).decode() == (out / "score" / "scores.csv").read_text()
    # A follower's job (no scores written there) lists only what exists.
    (out / "score" / "scores.csv").unlink()
    assert [o["name"] for o in api("bob").get(f"{JOBS}/{job.id}/outputs/").json()] == ["aligned"]
    r = api("bob").get(f"{JOBS}/{job.id}/outputs/scores/download/")
    assert r.status_code == 404 and "no output 'scores'" in r.json()["detail"]


def test_unknown_names_traversal_and_other_workspaces_are_404(world, api, finished) -> None:
    job, _ = finished
    for name in ("nope", "..", "..%2F..%2Fetc%2Fpasswd", "aligned.csv", "%2Fetc%2Fpasswd"):
        r = api("alice").get(f"{JOBS}/{job.id}/outputs/{name}/download/")
        assert r.status_code == 404, name
        r = api("alice").post(f"{JOBS}/{job.id}/outputs/{name}/register/", {"name": "x"}, format="json")
        assert r.status_code == 404, name
    assert not Dataset.objects.filter(name="x").exists()
    # Charlie (globex) sees none of acme's jobs; an unknown job id is a 404 too.
    for path in (f"{JOBS}/{job.id}/outputs/", f"{JOBS}/{job.id}/outputs/scores/download/"):
        assert api("charlie").get(path).status_code == 404
    assert api("charlie").get(f"/api/v1/workspaces/globex/jobs/{job.id}/outputs/").status_code == 404
    assert api("alice").get(f"{JOBS}/{uuid.uuid4()}/outputs/scores/download/").status_code == 404


def test_a_symlink_leading_out_of_the_jobs_folder_is_neither_listed_nor_served(world, api, finished, tmp_path) -> None:
    """A runtime that leaves symlinks to another job's folder or to /etc in its own gets nothing through them."""
    job, out = finished
    other = tmp_path / "jobs" / "j2" / "leader"  # another job's outputs, next door
    (other / "psi").mkdir(parents=True)
    (other / "psi" / "aligned.csv").write_text("user_id,secret\nv1,42\n")
    (out / "psi" / "aligned.csv").unlink()
    (out / "psi").rmdir()
    (out / "psi").symlink_to(other / "psi")  # a folder symlink: the file itself is no symlink
    (out / "score" / "scores.csv").unlink()
    (out / "score" / "scores.csv").symlink_to("/etc/passwd")
    r = api("bob").get(f"{JOBS}/{job.id}/outputs/")
    assert r.status_code == 200 and r.json() == []
    for name in ("aligned", "scores"):
        r = api("dave").get(f"{JOBS}/{job.id}/outputs/{name}/download/")
        assert r.status_code == 404 and f"no output '{name}'" in r.json()["detail"]
        r = api("dave").post(f"{JOBS}/{job.id}/outputs/{name}/register/", {"name": f"stolen {name}"}, format="json")
        assert r.status_code == 404
    assert not Dataset.objects.filter(name__startswith="stolen").exists()
    # A symlink that stays inside the job's folder is fine: what is served is the real file there.
    (out / "score" / "scores.csv").unlink()
    (out / "score" / "real.csv").write_text("user_id,score\nu1,0.5\n")
    (out / "score" / "scores.csv").symlink_to("real.csv")
    assert [o["name"] for o in api("bob").get(f"{JOBS}/{job.id}/outputs/").json()] == ["scores"]
    r = api("bob").get(f"{JOBS}/{job.id}/outputs/scores/download/")
    assert r.status_code == 200 and b"".join(r.streaming_content) == b"user_id,score\nu1,0.5\n"


def test_a_folder_this_installation_cannot_read_is_a_404_naming_why(world, api, browser_client, finished) -> None:
    job, out = finished
    for handle, why in (
        (
            {"backend": "local", "output_dir": str(out.parent / "gone")},
            f"its folder {out.parent / 'gone'} does not exist",
        ),
        ({"backend": "local", "output_dir": str(out), "host": "elsewhere.example"}, "ran on elsewhere.example"),
    ):
        Job.objects.filter(pk=job.pk).update(handle=handle, status="succeeded")
        for path in (f"{JOBS}/{job.id}/outputs/", f"{JOBS}/{job.id}/outputs/scores/download/"):
            r = api("bob").get(path)
            assert r.status_code == 404, (path, r.content)
            assert "outputs are not readable here" in r.json()["detail"] and why in r.json()["detail"]
        r = api("dave").post(f"{JOBS}/{job.id}/outputs/scores/register/", {"name": "x"}, format="json")
        assert r.status_code == 404 and why in r.json()["detail"]
        page = browser_client("bob").get(f"/w/acme/jobs/{job.pk}/")
        assert page.status_code == 200 and why in page.content.decode()
        assert browser_client("bob").get(f"/w/acme/jobs/{job.pk}/outputs/scores/download").status_code == 404
    # A job whose runtime never started here has no outputs yet: an empty list, not an error.
    Job.objects.filter(pk=job.pk).update(handle={}, status="pending")
    r = api("bob").get(f"{JOBS}/{job.id}/outputs/")
    assert r.status_code == 200 and r.json() == []


def test_an_output_is_registered_as_a_dataset_in_one_call(world, api, finished, data_root) -> None:
    job, out = finished
    r = api("dave").post(f"{JOBS}/{job.id}/outputs/aligned/register/", {"name": "aligned q3"}, format="json")
    assert r.status_code == 201, r.content
    ds = Dataset.objects.get(pk=r.json()["id"])
    assert ds.workspace == world["acme"] and ds.row_count == 3 and ds.id_column == "user_id"
    assert ds.label_column == "clicked"  # the leader's aligned table keeps its labels
    path = Path(ds.uri)
    assert (
        path.parent == data_root / "job-outputs" / str(job.id)
        and path.read_bytes() == (out / "psi" / "aligned.csv").read_bytes()
    )
    r = api("dave").get(f"/api/v1/workspaces/acme/datasets/{ds.id}/download/")
    assert r.status_code == 200, r.content
    assert r["Content-Type"] == "text/csv"
    assert b"".join(r.streaming_content) == path.read_bytes()
    # The scores; then the bad inputs.
    r = api("dave").post(f"{JOBS}/{job.id}/outputs/scores/register/", {"name": "scores q3"}, format="json")
    assert r.status_code == 201 and r.json()["label_column"] == "" and r.json()["row_count"] == 3
    before = Dataset.objects.count()
    for body, field, text in (
        ({"name": "aligned q3"}, "name", "already exists"),
        ({"name": "   "}, "name", ""),
        ({}, "name", "required"),
        ({"name": "a/b"}, "name", "slashes"),
    ):
        r = api("dave").post(f"{JOBS}/{job.id}/outputs/aligned/register/", body, format="json")
        assert r.status_code == 400 and text in str(r.json()[field]), (body, r.json())
    assert (
        api("bob").post(f"{JOBS}/{job.id}/outputs/aligned/register/", {"name": "v"}, format="json").status_code == 403
    )
    assert Dataset.objects.count() == before


def test_the_leaders_scores_become_a_dataset_when_the_job_succeeds(
    world, finished, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from fedsite.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    job, out = finished
    job.result = {"score": {"rows": 3, "scores_path": str(out / "score" / "scores.csv")}}
    job.save()
    with django_capture_on_commit_callbacks(execute=True):
        set_job_status(job, "succeeded", notify_partner=False)
    job.refresh_from_db()
    noted = job.result["scores_dataset"]
    ds = Dataset.objects.get(pk=noted["id"], workspace=world["acme"])
    assert noted["name"] == ds.name and ds.name.endswith("scores #1") and ds.row_count == 3
    assert Path(ds.uri).read_text() == (out / "score" / "scores.csv").read_text()


def test_the_job_page_offers_each_output_for_download_and_registration(world, browser_client, finished) -> None:
    job, out = finished
    html = browser_client("bob").get(f"/w/acme/jobs/{job.pk}/").content.decode()
    assert "Outputs on this side" in html and str(out / "score" / "scores.csv") in html
    assert f"/w/acme/jobs/{job.pk}/outputs/scores/download" in html
    assert "Register as dataset" not in html  # a viewer may download, not register
    page = browser_client("bob").get(f"/w/acme/jobs/{job.pk}/outputs/scores/download")
    assert page.status_code == 200 and page["Content-Type"] == "text/csv"
    assert b"".join(page.streaming_content).decode() == (out / "score" / "scores.csv").read_text()
    assert browser_client("bob").get(f"/w/acme/jobs/{job.pk}/outputs/..%2Fx/download").status_code == 404
    assert browser_client("charlie").get(f"/w/acme/jobs/{job.pk}/outputs/scores/download").status_code in (403, 404)
    dave = browser_client("dave")
    assert "Register as dataset" in dave.get(f"/w/acme/jobs/{job.pk}/").content.decode()
    r = dave.post(f"/w/acme/jobs/{job.pk}/outputs/scores/register", {"name": "new scores"}, follow=True)
    assert r.status_code == 200 and "Registered as dataset new scores" in r.content.decode()
    assert Dataset.objects.get(workspace=world["acme"], name="new scores").row_count == 3
    r = dave.post(f"/w/acme/jobs/{job.pk}/outputs/scores/register", {"name": "new scores"}, follow=True)
    assert "already exists" in r.content.decode()
    assert Dataset.objects.filter(name="new scores").count() == 1
