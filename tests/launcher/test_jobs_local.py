"""Jobs through the service layer with the local backend and real subprocesses.

The partner is simulated by the `job.state` / `job.retry` payloads its peer
service would deliver (both sides of one job share a UUID, so they cannot live
in one test database).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from apps.jobs import launch as launching
from apps.jobs.models import Job
from apps.jobs.services import apply_remote_job_state, apply_report, cancel_job, set_job_status
from apps.peer.models import OutboxMessage
from apps.tickets.choices import PartyRole
from tests.launcher.conftest import gone, wait_for

pytestmark = [pytest.mark.launcher, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def direct_tasks(monkeypatch, runtime_env):
    """Run launch/stop right where the service would enqueue them (no broker in these tests)."""
    monkeypatch.setattr("apps.jobs.services._launch", lambda job_id: launching.launch(job_id))
    monkeypatch.setattr("apps.jobs.services._stop_runtime", lambda job_id: launching.stop(job_id))
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)


def states(job) -> list[dict]:
    return [m.payload for m in OutboxMessage.objects.filter(ticket_id=job.ticket_id, kind="job.state").order_by("seq")]


def reconcile_until(job, status, timeout=20.0) -> Job:
    def done():
        launching.reconcile()
        j = Job.objects.get(pk=job.pk)
        return j if j.status == status else None

    return wait_for(done, timeout, what=f"job {status}")


def runtime_info(job) -> dict:
    job.refresh_from_db()
    path = Path(job.handle["output_dir"]) / "fake.json"
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), what="runtime start"))


def test_leader_picks_a_port_tells_the_partner_and_succeeds(side):
    job = side(PartyRole.LEADER, fake={"sleep": 0.3})
    assert launching.launch(str(job.id)) == "started"
    assert launching.launch(str(job.id)) == "skipped"  # idempotent
    job.refresh_from_db()
    assert job.status == "starting" and job.handle["pid"]
    host, _, port = job.runtime_address.partition(":")
    assert host == "127.0.0.1" and int(port) in range(17000, 18000)
    sent = states(job)
    assert sent[-1]["status"] == "starting" and sent[-1]["runtime_address"] == job.runtime_address
    info = runtime_info(job)
    assert info["listen_address"] == job.runtime_address
    config = json.loads(Path(job.handle["config"]).read_text())
    assert config["report"]["url"].endswith(f"/api/v1/runtime/jobs/{job.id}/report")
    folder = str(Path(job.ticket.local_dataset.uri).parent)
    assert config["data"] == {
        "path": job.ticket.local_dataset.uri,
        "id_column": "id",
        "label_column": "label",
        "folders": [folder],  # the runtime refuses a path leading out of the workspace's folders
    }
    assert config["steps"] == ["psi"]
    from apps.jobs.services import job_for_token

    assert job_for_token(job.id, config["report"]["token"]) is not None  # a per-job token, not a user's
    job = reconcile_until(job, "succeeded")
    assert job.ticket.status == "succeeded" and job.progress == 1.0
    assert states(job)[-1]["status"] == "succeeded"


def test_follower_waits_for_the_leader_address_then_launches(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.FOLLOWER, fake={"sleep": 0.2})
    assert launching.launch(str(job.id)) == "waiting"
    job.refresh_from_db()
    assert job.status == "pending" and not job.handle
    with django_capture_on_commit_callbacks(execute=True):
        apply_remote_job_state(job, {"status": "starting", "runtime_address": "127.0.0.1:17123", "progress": 0})
    job.refresh_from_db()
    assert job.status == "starting" and job.remote_status == "starting"
    info = runtime_info(job)
    assert info["role"] == "follower" and info["peer_address"] == "127.0.0.1:17123"
    config = json.loads(Path(job.handle["config"]).read_text())
    assert config["data"]["label_column"] is None and "listen_address" not in config
    reconcile_until(job, "succeeded")


def test_a_bad_address_from_the_partner_is_ignored(side):
    job = side(PartyRole.FOLLOWER)
    apply_remote_job_state(job, {"status": "starting", "runtime_address": "no port here"})
    job.refresh_from_db()
    assert job.runtime_address == "" and job.status == "pending"


def test_failure_summary_reaches_the_partner(side):
    job = side(PartyRole.LEADER, fake={"exit": 2, "message": "error: data.id_column: 'id' has 3 duplicates"})
    launching.launch(str(job.id))
    job = reconcile_until(job, "failed")
    assert job.error == "error: data.id_column: 'id' has 3 duplicates"
    assert "duplicates" in job.log_tail
    last = states(job)[-1]
    assert last["status"] == "failed" and last["error"] == job.error
    assert job.ticket.status == "failed"


def test_partner_failure_fails_ours_and_stops_our_runtime(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.LEADER, fake={"sleep": 60, "child": True})
    launching.launch(str(job.id))
    info = runtime_info(job)
    with django_capture_on_commit_callbacks(execute=True):
        apply_remote_job_state(job, {"status": "failed", "error": "error: PSI: peer certificate not trusted"})
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "the partner's job failed: error: PSI: peer certificate not trusted"
    assert job.remote_error == "error: PSI: peer certificate not trusted"
    assert gone(info["pid"]) and gone(info["child_pid"])
    # Our side's end goes back, so the partner shows us as failed too; the echo cannot loop.
    assert states(job)[-1]["status"] == "failed"
    apply_remote_job_state(job, {"status": "failed", "error": "the partner's job failed: …"})
    assert states(job)[-1]["status"] == "failed" and len(states(job)) == 2


def test_the_runtime_runs_nicer_than_the_installation(side, settings, django_capture_on_commit_callbacks):
    settings.FEDSITE_LOCAL_RUNTIME_NICE = 7
    job = side(PartyRole.LEADER, fake={"sleep": 30, "child": True})
    launching.launch(str(job.id))
    info = runtime_info(job)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    # The runtime and the processes it starts (PSI's pool workers) leave the CPU to web, peer and workers.
    assert os.getpriority(os.PRIO_PROCESS, info["pid"]) == min(19, mine + 7)
    assert os.getpriority(os.PRIO_PROCESS, info["child_pid"]) == min(19, mine + 7)
    autogroup = Path(f"/proc/{info['pid']}/autogroup")
    if autogroup.exists():  # the kernel schedules sessions as groups: the runtime's group is niced too
        assert autogroup.read_text().split()[-1] == "7"
    job.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        cancel_job(job)
    assert gone(info["pid"]) and gone(info["child_pid"])


def test_a_runtime_reporting_its_failure_fails_the_job_at_once(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.LEADER, fake={"sleep": 60})
    launching.launch(str(job.id))
    info = runtime_info(job)
    reason = "error: data.path: no such file /data/labels.csv"
    with django_capture_on_commit_callbacks(execute=True):
        apply_report(job, [{"type": "log", "line": "step psi: starting"}, {"type": "failed", "error": reason}])
    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", reason)  # no reconcile needed
    assert job.log_tail.endswith("step psi: starting")
    assert states(job)[-1]["status"] == "failed" and states(job)[-1]["error"] == reason
    assert gone(info["pid"])


def test_our_runtimes_reason_replaces_the_partners_echo_of_it(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.LEADER, fake={"sleep": 60})
    launching.launch(str(job.id))
    runtime_info(job)
    reason = "error: the leader cannot run: data.path: no such file /data/labels.csv"
    # The partner's runtime heard of our failure first and its side failed; that echo lands here first.
    with django_capture_on_commit_callbacks(execute=True):
        apply_remote_job_state(job, {"status": "failed", "error": reason})
    job.refresh_from_db()
    assert job.error == f"the partner's job failed: {reason}"
    sent = len(states(job))
    # Then our runtime's own report arrives: this side shows its own reason, and tells the partner.
    assert apply_report(job, [{"type": "failed", "error": reason}]) == 1
    job.refresh_from_db()
    assert (job.status, job.error, job.remote_error) == ("failed", reason, reason)
    assert len(states(job)) == sent + 1 and states(job)[-1]["error"] == reason
    # A failure we decided ourselves is never rewritten, nor is a finished job's.
    assert apply_report(job, [{"type": "failed", "error": "error: something else"}]) == 0
    job.refresh_from_db()
    assert job.error == reason


def test_cancel_here_stops_the_runtime_and_tells_the_partner(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.FOLLOWER, fake={"sleep": 60})
    with django_capture_on_commit_callbacks(execute=True):
        apply_remote_job_state(job, {"status": "starting", "runtime_address": "127.0.0.1:17124"})
    info = runtime_info(job)
    job.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        cancel_job(job, reason="wrong dataset")
    assert gone(info["pid"])
    job.refresh_from_db()
    assert job.status == "cancelled" and job.ticket.status == "cancelled"
    last = states(job)[-1]
    assert last["status"] == "cancelled" and last["error"] == "wrong dataset"
    launching.reconcile()  # the killed runtime does not turn the cancel into a failure
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_partner_cancel_cancels_ours(side, django_capture_on_commit_callbacks):
    job = side(PartyRole.LEADER, fake={"sleep": 60})
    launching.launch(str(job.id))
    info = runtime_info(job)
    with django_capture_on_commit_callbacks(execute=True):
        apply_remote_job_state(job, {"status": "cancelled", "error": "cancelled by erin"})
    job.refresh_from_db()
    assert job.status == "cancelled" and job.error == "cancelled by erin"
    assert gone(info["pid"])


def test_cancel_while_launching_stops_what_was_started(side, monkeypatch):
    job = side(PartyRole.LEADER, fake={"sleep": 60})
    real_start = launching.get_launcher("local").start.__func__

    def start_then_cancel(self, spec):
        handle = real_start(self, spec)
        set_job_status(Job.objects.get(pk=job.pk), "cancelled", error="cancelled by dave")
        return handle

    monkeypatch.setattr("apps.jobs.launchers.local.LocalLauncher.start", start_then_cancel)
    assert launching.launch(str(job.id)) == "stopped"
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert gone(job.handle["pid"])


def test_worker_killed_mid_job_then_reconciler(side):
    """The runtime finished while no worker ran; the next reconcile judges it from its exit file."""
    job = side(PartyRole.LEADER, fake={"sleep": 0.2, "exit": 1, "message": "error: train: loss is NaN"})
    launching.launch(str(job.id))
    job.refresh_from_db()
    from apps.jobs.launchers import local

    local._children.clear()  # a restarted worker has no Popen objects, only the stored handle
    wait_for(lambda: Path(job.handle["exit_file"]).exists(), what="exit file")
    assert launching.reconcile() == 1
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "error: train: loss is NaN"


def test_launch_without_tls_material_fails_clearly(side, settings):
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = False
    job = side(PartyRole.LEADER)
    assert launching.launch(str(job.id)) == "failed"
    job.refresh_from_db()
    assert job.status == "failed" and "TLS material" in job.error
    assert states(job)[-1]["status"] == "failed"


def test_a_dataset_file_that_leads_out_of_its_workspace_folder_is_never_launched(side, tmp_path):
    job = side(PartyRole.LEADER)
    mine = Path(job.ticket.local_dataset.uri)
    theirs = tmp_path / "data" / "globex" / "secret.csv"
    theirs.parent.mkdir()
    theirs.write_text("id,x,label\nz1,1,0\n")
    mine.unlink()
    mine.symlink_to(theirs)  # swapped for a link to another workspace's file after registration
    assert launching.launch(str(job.id)) == "failed"
    job.refresh_from_db()
    assert job.status == "failed" and "is not inside this workspace's data folders" in job.error
    assert "migrate_data_folders" in job.error and not job.handle.get("pid")


def test_launch_with_the_installation_tls_files(side, settings, tmp_path):
    from tests.pki import make_party

    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = False
    settings.VAR_DIR = tmp_path / "var"
    job = side(PartyRole.LEADER, fake={"sleep": 0})
    partner = job.ticket.partner
    partner.ca_pem = make_party(tmp_path / "pki", "beta").ca_file.read_text()
    partner.save()
    assert launching.launch(str(job.id)) == "started"
    config = json.loads(Path(job.__class__.objects.get(pk=job.pk).handle["config"]).read_text())
    assert set(config["tls"]) == {"cert_file", "key_file", "peer_ca_file"}
    assert Path(config["tls"]["peer_ca_file"]).read_text() == partner.ca_pem
    assert "allow_insecure" not in config


def test_no_free_port_fails_the_job(side, settings):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings.FEDSITE_RUNTIME_PORTS = f"{port}-{port}"  # the only port is taken
        job = side(PartyRole.LEADER)
        assert launching.launch(str(job.id)) == "failed"
    job.refresh_from_db()
    assert "no free runtime port" in job.error


def test_stale_launch_claim_is_failed_by_the_reconciler(side):
    job = side(PartyRole.LEADER)
    Job.objects.filter(pk=job.pk).update(handle={"backend": "local", "state": "launching", "since": 0})
    launching.reconcile()
    job.refresh_from_db()
    assert job.status == "failed" and "interrupted" in job.error


def test_reconciler_relaunches_a_job_whose_launch_message_was_lost(side, monkeypatch):
    import datetime as dt

    from django.utils import timezone

    job = side(PartyRole.LEADER)
    sent = []
    monkeypatch.setattr("workers.tasks.launch_job.delay", lambda **kw: sent.append(kw))
    launching.reconcile()
    assert sent == []  # too fresh: its own launch task may still be on the way
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    launching.reconcile()
    assert sent == [{"job_id": str(job.id)}]


def test_a_follower_that_never_hears_from_the_leader_fails(side, settings):
    import datetime as dt

    from django.utils import timezone

    settings.FEDSITE_LEADER_WAIT_S = 60
    job = side(PartyRole.FOLLOWER)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    launching.reconcile()
    job.refresh_from_db()
    assert job.status == "failed" and "did not start within 60 s" in job.error


def test_a_tree_ticket_runs_the_tree_step_and_registers_its_half(side, launcher):
    from apps.registry.services import model_version_id, register_from_job
    from apps.tickets.choices import JobKind

    job = side(PartyRole.LEADER, kind=JobKind.PSI_VERTICAL_TREE)
    job.ticket.params = {"psi": {"protocol": "auto"}, "tree": {"max_depth": 3, "num_trees": 7}, "share_metrics": False}
    job.ticket.save()
    config = launching.build_spec(job, launcher, 17001).config
    assert config["steps"] == ["psi", "tree"]
    assert config["tree"] == {"max_depth": 3, "num_trees": 7, "share_metrics": False}
    # the runtime accepts exactly this config
    from runtime.config import parse_config

    assert parse_config({**config, "output_dir": "x"}).tree["num_trees"] == 7
    job.result = {"tree": {"model_dir": "/jobs/x/tree/model", "trees": 5, "metrics": {"validation": {"auc": 0.8}}}}
    job.save()
    mv = register_from_job(job)
    assert mv is not None and mv.id == model_version_id(job.id) and mv.artifact_uri == "/jobs/x/tree/model"
    assert mv.metrics["trees"] == 5 and mv.metrics["metrics"]["validation"]["auc"] == 0.8
