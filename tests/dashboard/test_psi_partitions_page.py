"""The job page of a partitioned PSI job (issue 16): the partition count, a table of partitions, the failed one named."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.services import apply_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def psi_job(world):
    ticket = world["received"]  # a `psi` ticket
    ticket.params = {"psi": {"partitions": 3}}
    ticket.save(update_fields=["params"])
    job = Job.objects.create(
        workspace=world["acme"], ticket=ticket, role=ticket.role, status="running", started_at=timezone.now()
    )
    apply_report(job, [{"type": "progress", "value": 0.5, "stage": "psi.p0of3"}])
    data = {"partition": 2, "partitions": 3, "input_size": 1234, "intersection_size": 567, "reused": True}
    apply_report(job, [{"type": "result", "stage": "psi", "data": data}])
    job.refresh_from_db()
    return job


def row(body: str, index: int) -> str:
    m = re.search(rf'<tr data-partition="{index}"[^>]*>(.*?)</tr>', body, re.S)
    assert m, f"no row for partition {index}"
    return m.group(0)


def test_the_page_shows_the_count_and_each_partitions_state(psi_job, browser_client):
    body = browser_client("bob").get(f"/w/acme/jobs/{psi_job.pk}/").content.decode()
    assert re.search(r'Partitions: <strong data-field="partition-count">3</strong>', body)
    assert 'data-state="running"' in row(body, 0) and "50%" in row(body, 0)
    assert 'data-state="pending"' in row(body, 1)
    done = row(body, 2)
    assert 'data-state="succeeded"' in done and "1234" in done and "567" in done
    assert "yes: an earlier attempt's result" in done  # reused on a retry
    assert "failed:" not in body


def test_the_poll_json_carries_the_partitions_as_they_change(psi_job, browser_client):
    client = browser_client("bob")
    parts = client.get(f"/w/acme/jobs/{psi_job.pk}/live").json()["job"]["partitions"]
    assert [(p["index"], p["state"]) for p in parts] == [(0, "running"), (1, "pending"), (2, "succeeded")]
    apply_report(psi_job, [{"type": "progress", "value": 0.75, "stage": "psi.p1of3"}])
    parts = client.get(f"/w/acme/jobs/{psi_job.pk}/live").json()["job"]["partitions"]
    assert parts[1]["state"] == "running" and parts[1]["progress"] == 0.75
    assert parts[2]["reused"] is True and parts[2]["intersection_size"] == 567


def test_a_failed_partition_is_named_on_the_page(psi_job, browser_client):
    apply_report(psi_job, [{"type": "failed", "error": "error: partition 1 of 3: the partner disconnected"}])
    client = browser_client("bob")
    body = client.get(f"/w/acme/jobs/{psi_job.pk}/").content.decode()
    assert "Partition 1 of 3 failed:" in body
    assert 'data-state="failed"' in row(body, 1) and "the partner disconnected" in row(body, 1)
    assert 'data-state="stopped"' in row(body, 0)
    parts = client.get(f"/w/acme/jobs/{psi_job.pk}/live").json()["job"]["partitions"]
    assert [p["state"] for p in parts] == ["stopped", "failed", "succeeded"]


def test_other_jobs_have_no_partitions_panel(world, browser_client):
    client = browser_client("bob")
    assert "data-partitions-panel" not in client.get(f"/w/acme/jobs/{world['job'].pk}/").content.decode()
    assert client.get(f"/w/acme/jobs/{world['job'].pk}/live").json()["job"]["partitions"] is None
