"""Jobs always end, and end with their result: a worker killed between recording the
runtime's end and moving the job, and a web that is down when the runtime reports its result."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from apps.jobs import launch as launching
from apps.jobs.models import Job
from apps.registry.models import ModelVersion
from apps.registry.services import model_version_id
from apps.tickets.choices import JobKind, PartyRole
from tests.launcher.conftest import wait_for

pytestmark = [pytest.mark.launcher, pytest.mark.django_db]

TRAIN_RESULT = {"model_dir": "/models/half", "metrics": {"auc": 0.81}, "epochs": 3}


@pytest.fixture(autouse=True)
def direct_tasks(monkeypatch, runtime_env):
    monkeypatch.setattr("apps.jobs.services._launch", lambda job_id: launching.launch(job_id))
    monkeypatch.setattr("apps.jobs.services._stop_runtime", lambda job_id: launching.stop(job_id))
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)


def closed_port() -> int:
    """A loopback port nothing listens on (the web is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_job_whose_handle_says_finished_is_ended_by_the_reconciler_with_its_result(side):
    """Written by a worker killed between the two commits: handle finished, job still running."""
    # given a training job whose runtime succeeded and left its result in the job folder
    job = side(PartyRole.LEADER, fake={"sleep": 0}, kind=JobKind.PSI_VERTICAL_NN)
    assert launching.launch(str(job.id)) == "started"
    job.refresh_from_db()
    wait_for(lambda: Path(job.handle["exit_file"]).exists(), what="exit file")
    Path(job.handle["output_dir"], "result.json").write_text(json.dumps({"train": TRAIN_RESULT}))
    Job.objects.filter(pk=job.pk).update(status="running", handle={**job.handle, "state": "finished", "exit_code": 0})
    # when the reconciler runs
    assert launching.reconcile() == 1
    # then the job ends with the result, and this side's model half is registered
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.result["train"] == TRAIN_RESULT
    assert ModelVersion.objects.filter(id=model_version_id(job.id), job=job).exists()


def test_handle_and_status_move_together(side, monkeypatch):
    """A failure while moving the job leaves the handle as it was, so the next reconcile tries again."""
    job = side(PartyRole.LEADER, fake={"sleep": 0})
    launching.launch(str(job.id))
    job.refresh_from_db()
    wait_for(lambda: Path(job.handle["exit_file"]).exists(), what="exit file")

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr("apps.jobs.services.set_job_status", killed)
    with pytest.raises(SystemExit):
        launching.reconcile_job(Job.objects.get(pk=job.pk))
    job.refresh_from_db()
    assert job.status == "starting" and job.handle.get("state") != "finished"
    monkeypatch.undo()
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)
    assert launching.reconcile() == 1
    job.refresh_from_db()
    assert job.status == "succeeded" and job.handle["state"] == "finished"


def test_a_side_whose_web_was_down_at_the_end_still_registers_its_model_half(side, settings):
    # given the web is down while the runtime reports its training result
    settings.FEDSITE_RUNTIME_REPORT_URL = f"http://127.0.0.1:{closed_port()}"
    job = side(
        PartyRole.LEADER,
        fake={"results": {"train": TRAIN_RESULT}, "flush_s": 0.5},
        kind=JobKind.PSI_VERTICAL_NN,
    )
    launching.launch(str(job.id))
    job.refresh_from_db()
    # when the runtime exits (its reports undelivered) and the worker reconciles
    wait_for(lambda: Path(job.handle["exit_file"]).exists(), timeout=30, what="exit file")
    assert json.loads(Path(job.handle["output_dir"], "result.json").read_text()) == {"train": TRAIN_RESULT}
    assert launching.reconcile() == 1
    # then the job succeeded with the result from the job folder, and the model half has the shared UUID
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result["train"] == TRAIN_RESULT
    mv = ModelVersion.objects.get(job=job)
    assert mv.id == model_version_id(job.id) and mv.artifact_uri == TRAIN_RESULT["model_dir"]


def test_the_kubernetes_launcher_reads_the_result_where_the_workers_mount_the_outputs(settings, tmp_path):
    from apps.jobs.launchers.kubernetes import KubernetesLauncher

    handle = {"backend": "kubernetes", "job_id": "7b0c", "side": "follower", "name": "fedsite-7b0c-follower"}
    launcher = KubernetesLauncher(api_client=object())
    settings.FEDSITE_K8S_OUTPUT_PVC = "fedsite-jobs"
    settings.FEDSITE_K8S_OUTPUT_MOUNT = ""
    assert launcher.read_result(handle) == {}  # the workers do not see the outputs: nothing to read
    settings.FEDSITE_K8S_OUTPUT_MOUNT = str(tmp_path)
    (tmp_path / "7b0c" / "follower").mkdir(parents=True)
    (tmp_path / "7b0c" / "follower" / "result.json").write_text(json.dumps({"train": TRAIN_RESULT}))
    assert launcher.read_result(handle) == {"train": TRAIN_RESULT}


def dead_worker() -> dict:
    """The claim of a worker that was killed (a pid that no longer runs) on this machine."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {"host": socket.gethostname(), "pid": proc.pid, "start_ticks": None}


def test_a_runtime_started_by_a_worker_killed_before_it_stored_the_handle_is_adopted(side):
    # given a worker that started the runtime and was killed before it stored the handle
    job = side(PartyRole.LEADER, fake={"sleep": 0.5})
    assert launching.launch(str(job.id)) == "started"
    job.refresh_from_db()
    claim = {
        "backend": "local",
        "state": "launching",
        "since": 0.0,
        "port": job.handle["port"],
        "worker": dead_worker(),
    }
    Job.objects.filter(pk=job.pk).update(status="pending", handle=claim)
    # when the reconciler looks at it (at once: no need to wait out the stale-claim timer)
    assert launching.reconcile_job(Job.objects.get(pk=job.pk), now=claim["since"] + 1) == "adopted"
    # then the job follows the runtime it already has, to its end
    job.refresh_from_db()
    assert job.status == "starting" and job.handle.get("state") != "launching" and job.handle["pid"]
    wait_for(lambda: Path(job.handle["exit_file"]).exists(), what="exit file")
    launching.reconcile()
    job.refresh_from_db()
    assert job.status == "succeeded"


def test_a_launch_whose_worker_was_killed_before_starting_anything_starts_again(side, monkeypatch):
    job = side(PartyRole.LEADER, fake={"sleep": 0})
    claim = {"backend": "local", "state": "launching", "since": 0.0, "port": None, "worker": dead_worker()}
    Job.objects.filter(pk=job.pk).update(handle=claim)
    monkeypatch.setattr("workers.tasks.launch_job.delay", lambda job_id: launching.launch(job_id))
    assert launching.reconcile_job(Job.objects.get(pk=job.pk), now=1.0) == "relaunched"
    job.refresh_from_db()
    assert job.status == "starting" and job.handle["pid"]


def test_a_launch_claimed_by_a_live_worker_is_left_alone(side):
    job = side(PartyRole.LEADER)
    claim = {"backend": "local", "state": "launching", "since": 0.0, "port": None, "worker": launching._this_worker()}
    Job.objects.filter(pk=job.pk).update(handle=claim)
    assert launching.reconcile_job(Job.objects.get(pk=job.pk), now=1.0) == "launching"
