"""Partitioned PSI through the local launcher (issue 16): P runtime processes per side, one per partition."""

from __future__ import annotations

import csv
import json
import random
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from apps.jobs import launch as launching
from apps.jobs.launchers.base import SUCCEEDED, RuntimeSpec
from apps.jobs.launchers.local import LocalLauncher, is_alive, kill_all
from apps.jobs.models import Job
from apps.jobs.services import apply_report, job_id_for, start_ticket_run
from apps.tickets.choices import PartyRole
from tests.launcher.conftest import wait_finished, wait_for

pytestmark = [pytest.mark.launcher, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def direct_tasks(monkeypatch, runtime_env):
    monkeypatch.setattr("apps.jobs.services._launch", lambda job_id: None)
    monkeypatch.setattr("apps.jobs.services._stop_runtime", lambda job_id: launching.stop(job_id))
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)
    yield
    kill_all(runtime_env.FEDSITE_JOBS_DIR)


def partitioned(job: Job, count: int, fake: dict) -> Job:
    ticket = job.ticket
    ticket.params = {"psi": {"fake": fake, "partitions": count}}
    ticket.save(update_fields=["params"])
    return Job.objects.select_related("ticket").get(pk=job.pk)


def reconcile_until(job: Job, status: str, timeout: float = 20.0) -> Job:
    def done():
        launching.reconcile()
        j = Job.objects.get(pk=job.pk)
        return j if j.status == status else None

    return wait_for(done, timeout, what=f"job {status}")


def test_leader_runs_one_process_per_partition_on_consecutive_ports(side):
    job = partitioned(side(PartyRole.LEADER), 3, {"sleep": 0.5})
    assert launching.launch(str(job.id)) == "started"
    job.refresh_from_db()
    parts = job.handle["partitions"]
    assert len(parts) == 3 and job.handle["port_count"] == 3
    assert len({p["pid"] for p in parts}) == 3 and all(is_alive(p["pid"], p["start_ticks"]) for p in parts)
    host, _, port = job.runtime_address.partition(":")
    keys = set()
    for i, part in enumerate(parts):
        config = json.loads(Path(part["config"]).read_text())
        partition = config["psi"]["partition"]
        assert partition["index"] == i and partition["ports"] == "offset" and partition["reuse_from"] == []
        assert config["listen_address"].endswith(f":{port}")  # the runtime adds the index
        assert config["output_dir"] == job.handle["output_dir"]  # one output folder per side: the parts merge there
        keys.add(partition["key"])
    assert len(keys) == 1 and len(next(iter(keys))) == 64
    # Another job's port range must not overlap this one's.
    other = partitioned(side(PartyRole.LEADER), 1, {"sleep": 0.5})
    other.ticket.params = {"psi": {"fake": {"sleep": 0.5}}}
    other.ticket.save()
    used = range(int(port), int(port) + 3)
    for _ in range(5):
        assert launching.choose_port(LocalLauncher(), other, 1) not in used
    reconcile_until(job, "succeeded")


def test_progress_is_the_mean_over_partitions_and_results_are_kept_per_partition(side):
    job = partitioned(side(PartyRole.LEADER), 2, {"sleep": 3})
    launching.launch(str(job.id))
    job.refresh_from_db()
    apply_report(job, [{"type": "progress", "value": 0.5, "stage": "psi.p0of2"}])
    apply_report(job, [{"type": "progress", "value": 0.9, "stage": "psi.p1of2"}])
    job.refresh_from_db()
    assert job.progress == pytest.approx(0.7) and job.stage == "psi"
    apply_report(job, [{"type": "result", "stage": "psi", "data": {"partition": 1, "partitions": 2, "input_size": 5}}])
    apply_report(job, [{"type": "progress", "value": 1.0, "stage": "psi.p0of2"}])
    job.refresh_from_db()
    assert job.progress == pytest.approx(0.95)
    assert job.result["partitions"]["done"]["1"]["input_size"] == 5 and "psi" not in job.result
    apply_report(job, [{"type": "result", "stage": "psi", "data": {"partitions": 2, "intersection_size": 9}}])
    job.refresh_from_db()
    assert job.result["psi"]["intersection_size"] == 9


def test_one_failed_partition_fails_the_job_by_name_and_stops_the_others(side):
    fake = {"sleep": 60, "partition": {"1": {"sleep": 0.2, "exit": 1, "message": "error: the partner disconnected"}}}
    job = partitioned(side(PartyRole.LEADER), 2, fake)
    launching.launch(str(job.id))
    job.refresh_from_db()
    first = job.handle["partitions"][0]
    job = reconcile_until(job, "failed")
    assert job.error == "partition 1 of 2: error: the partner disconnected"
    wait_for(lambda: not is_alive(first["pid"], first["start_ticks"]), what="partition 0 stopped")


def test_a_retry_offers_the_earlier_attempts_outputs(side):
    first = partitioned(side(PartyRole.FOLLOWER), 2, {"sleep": 0.2})
    ticket = first.ticket
    Job.objects.filter(pk=first.pk).update(status="failed")
    from django.db import transaction

    with transaction.atomic():
        second = start_ticket_run(ticket)
    assert second.attempt == 2 and second.id == job_id_for(ticket.id, 2)
    Job.objects.filter(pk=second.pk).update(runtime_address="127.0.0.1:17100")
    launching.launch(str(second.id))
    second.refresh_from_db()
    for i, part in enumerate(second.handle["partitions"]):
        config = json.loads(Path(part["config"]).read_text())
        assert config["peer_address"] == "127.0.0.1:17100" and "key" not in config["psi"]["partition"]
        previous = Path(django_settings.FEDSITE_JOBS_DIR) / str(first.id) / "follower"
        assert config["psi"]["partition"]["reuse_from"] == [str(previous)]
        assert config["psi"]["partition"]["index"] == i


def test_partitions_only_for_psi_jobs():
    from apps.core.errors import ServiceError
    from apps.tickets.params import validate_params

    assert validate_params("psi", {"psi": {"partitions": 4}})["psi"]["partitions"] == 4
    with pytest.raises(ServiceError) as err:
        validate_params("psi_vertical_nn", {"psi": {"partitions": 2}})
    assert err.value.field == "params.psi.partitions"
    with pytest.raises(ServiceError):
        validate_params("psi", {"psi": {"partitions": 257}})


# -- the real runtime: both sides of a P = 2 job through the local launcher ----------------------


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def test_a_two_partition_job_with_the_real_runtime_matches_the_single_pair(settings, tmp_path):
    settings.FEDSITE_RUNTIME_COMMAND = None  # the real `python -m runtime`
    rng = random.Random(3)
    common = [f"c{rng.randrange(10**8)}" for _ in range(300)]
    a = _csv(tmp_path / "a.csv", ["id", "label"], [[x, "1"] for x in common + [f"a{i}" for i in range(200)]])
    b = _csv(tmp_path / "b.csv", ["uid", "f"], [[x, "z"] for x in [f"b{i}" for i in range(100)] + common[:250]])
    launcher = LocalLauncher()
    port = launching.choose_port(launcher, Job(), 2)

    def run(count: int) -> dict[str, Path]:
        job_id = str(uuid.uuid4())
        outs = {}
        handles = []
        for role, data, col in (("leader", a, "id"), ("follower", b, "uid")):
            psi: dict = {"protocol": "ecdh", "engine": "builtin", "workers": 0, "batch_size": 128, "partitions": count}
            if count > 1:
                psi["partition"] = {"ports": "offset"} | ({"key": "11" * 32} if role == "leader" else {})
            config = {
                "version": 1,
                "job_id": job_id,
                "role": role,
                "data": {"path": str(data), "id_column": col},
                "steps": ["psi"],
                "psi": psi,
                "allow_insecure": True,
                "timeout_s": 120,
                **(
                    {"listen_address": f"127.0.0.1:{port}"}
                    if role == "leader"
                    else {"peer_address": f"127.0.0.1:{port}"}
                ),
            }
            spec = RuntimeSpec(job_id=job_id, side=role, config=config, port=port, timeout_s=120, partitions=count)
            handles.append(launcher.start(spec))
            outs[role] = Path(handles[-1]["output_dir"])
        for handle in handles:
            state = wait_finished(launcher, handle, timeout=120)
            assert state.state == SUCCEEDED, (state.error, launcher.log_tail(handle))
        if count > 1:
            assert len(handles[0]["partitions"]) == count
        return outs

    single = run(1)
    split = run(2)
    for role in ("leader", "follower"):
        assert (split[role] / "psi" / "aligned.csv").read_bytes() == (single[role] / "psi" / "aligned.csv").read_bytes()
        result = json.loads((split[role] / "result.json").read_text())
        assert result["psi"]["partitions"] == 2 and result["psi"]["intersection_size"] == 250
