"""Partitioned PSI (issue 16): each partition's state, progress and figures, from what the workers report.

The job's result is built by the real `apply_report` from the events the runtime's partition
workers send (stage ``psi.p<i>of<P>`` progress, each partition's result, the merged result).
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from apps.datasets.services import register_dataset
from apps.jobs.models import Job
from apps.jobs.services import apply_report, partition_status, set_job_status
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from tests.foundation.factories import connected_partner, labelled_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_job(users, workspaces, data_root):
    acme = workspaces["acme"]
    partner = connected_partner(acme)
    ds = register_dataset(acme, name="labels", uri=str(labelled_csv(data_root)), id_column="id", label_column="label")

    def make(partitions: int | None = 3, kind: str = JobKind.PSI, attempt: int = 1) -> Job:
        params = {"psi": {"partitions": partitions}} if partitions is not None else {}
        ticket = Ticket.objects.create(
            workspace=acme, partner=partner, name=f"t{attempt}{partitions}{kind}", kind=kind,
            role=PartyRole.LEADER, is_proposer=True, local_dataset=ds, status=TicketStatus.RUNNING, params=params,
        )  # fmt: skip
        return Job.objects.create(
            workspace=acme, ticket=ticket, role=PartyRole.LEADER, status="running", attempt=attempt
        )

    return make


def progress(i: int, count: int, value: float) -> dict:
    return {"type": "progress", "value": value, "stage": f"psi.p{i}of{count}"}


def part_result(i: int, count: int, rows: int, common: int, reused: bool = False) -> dict:
    data = {"partition": i, "partitions": count, "input_size": rows, "intersection_size": common, "reused": reused}
    return {"type": "result", "stage": "psi", "data": data}


def merged(count: int, rows: int, common: int, reused: list[int], by: int) -> dict:
    data = {"partitions": count, "input_size": rows, "intersection_size": common, "reused_partitions": reused,
            "merged_by": by, "engine": "builtin"}  # fmt: skip
    return {"type": "result", "stage": "psi", "data": data}


def states(rows: list[dict]) -> list[str]:
    return [r["state"] for r in rows]


def test_only_partitioned_psi_jobs_have_partitions(make_job):
    assert partition_status(make_job(None)) is None
    assert partition_status(make_job(1)) is None
    assert partition_status(make_job(3, kind=JobKind.PSI_VERTICAL_NN)) is None


def test_before_any_report_every_partition_is_pending(make_job):
    rows = partition_status(make_job(3))
    assert rows is not None and [r["index"] for r in rows] == [0, 1, 2]
    assert states(rows) == ["pending"] * 3 and all(r["progress"] == 0.0 for r in rows)


def test_running_and_finished_partitions_while_the_job_runs(make_job):
    job = make_job(3)
    apply_report(job, [progress(0, 3, 0.4), progress(2, 3, 0.9)])
    apply_report(job, [part_result(2, 3, rows=40, common=12), progress(2, 3, 1.0)])
    job.refresh_from_db()
    rows = partition_status(job)
    assert states(rows) == ["running", "pending", "succeeded"]
    assert rows[0]["progress"] == pytest.approx(0.4) and rows[0]["input_size"] is None
    assert rows[2] == {"index": 2, "state": "succeeded", "progress": 1.0, "input_size": 40, "intersection_size": 12,
                       "reused": False, "error": ""}  # fmt: skip


def test_the_merging_partitions_figures_are_the_totals_less_the_others(make_job):
    job = make_job(3)
    apply_report(job, [part_result(0, 3, 30, 10), part_result(2, 3, 40, 12, reused=True)])
    # Partition 1 merges: it reports the merged result, not its own.
    apply_report(job, [merged(3, rows=100, common=30, reused=[2], by=1)])
    job.refresh_from_db()
    rows = partition_status(job)
    assert states(rows) == ["succeeded"] * 3
    assert (rows[1]["input_size"], rows[1]["intersection_size"], rows[1]["reused"]) == (30, 8, False)
    assert [r["reused"] for r in rows] == [False, False, True]


def test_a_failed_partition_is_named_and_the_others_are_stopped(make_job):
    job = make_job(4)
    apply_report(job, [progress(0, 4, 0.5), progress(1, 4, 0.2), part_result(3, 4, 25, 5)])
    apply_report(job, [{"type": "failed", "error": "error: partition 1 of 4: the partner disconnected"}])
    job.refresh_from_db()
    assert job.status == "failed"
    rows = partition_status(job)
    assert states(rows) == ["stopped", "failed", "stopped", "succeeded"]
    assert rows[1]["error"] == "error: partition 1 of 4: the partner disconnected"
    assert all(r["error"] == "" for r in rows if r["index"] != 1)


def test_the_partners_failure_names_the_pair_when_this_side_does_not(make_job):
    job = make_job(2)
    apply_report(job, [progress(0, 2, 0.5)])
    job.refresh_from_db()
    job.remote_error = "error: partition 0 of 2: out of disk"
    job.save(update_fields=["remote_error"])
    set_job_status(job, "failed", error="the partner's job failed: error: partition 0 of 2: out of disk", source="peer")
    job.refresh_from_db()
    rows = partition_status(job)
    assert states(rows) == ["failed", "stopped"] and "out of disk" in rows[0]["error"]


def test_a_retry_shows_which_partitions_were_reused(make_job):
    """A retry reruns only the failed partitions: the others report `reused` (runtime/psi/partition.py)."""
    job = make_job(2, attempt=2)
    apply_report(job, [part_result(0, 2, 50, 20, reused=True), progress(1, 2, 0.3)])
    job.refresh_from_db()
    rows = partition_status(job)
    assert states(rows) == ["succeeded", "running"] and [r["reused"] for r in rows] == [True, None]


def test_the_api_shows_the_partitions_and_the_schema_documents_them(make_job, api):
    job = make_job(2)
    apply_report(job, [part_result(0, 2, 50, 20), progress(1, 2, 0.25)])
    body = api("alice").get(f"/api/v1/workspaces/acme/jobs/{job.id}/").json()
    assert [(p["index"], p["state"], p["progress"]) for p in body["partitions"]] == [
        (0, "succeeded", 1.0),
        (1, "running", 0.25),
    ]
    assert body["partitions"][0]["intersection_size"] == 20
    listed = api("alice").get("/api/v1/workspaces/acme/jobs/").json()
    items = listed["results"] if isinstance(listed, dict) else listed
    assert next(j for j in items if j["id"] == str(job.id))["partitions"][1]["state"] == "running"
    plain = make_job(None)
    assert api("alice").get(f"/api/v1/workspaces/acme/jobs/{plain.id}/").json()["partitions"] is None

    comps = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    prop = comps["Job"]["properties"]["partitions"]
    assert (prop.get("$ref") or prop["allOf"][0]["$ref"]).endswith("/PsiPartitions")
    item = comps["PsiPartitions"]["items"]["properties"]
    assert item["state"]["enum"] == ["pending", "running", "succeeded", "failed", "stopped"]
    assert {"index", "progress", "input_size", "intersection_size", "reused", "error"} <= set(item)
