"""Retry: a failed or cancelled job runs again as the next attempt, the same one on both sides."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.core.errors import ServiceError
from apps.jobs.models import Job
from apps.jobs.services import apply_remote_retry, job_id_for, retry_job, set_job_status, start_ticket_run
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.models import OutboxMessage
from apps.tickets.choices import PartyRole

pytestmark = [pytest.mark.launcher, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def no_tasks(monkeypatch):
    monkeypatch.setattr("apps.jobs.services._launch", lambda job_id: None)
    monkeypatch.setattr("apps.jobs.services._stop_runtime", lambda job_id: None)
    monkeypatch.setattr("apps.peer.outbox._push", lambda partner_id: None)


def failed(job: Job, error: str = "error: boom") -> Job:
    set_job_status(job, "failed", error=error)
    return Job.objects.get(pk=job.pk)


def test_retry_creates_the_next_attempt_and_tells_the_partner(side, runtime_env):
    job = failed(side(PartyRole.LEADER))
    new = retry_job(job)
    assert new.attempt == 2 and new.id == job_id_for(job.ticket_id, 2) and new.status == "pending"
    msg = OutboxMessage.objects.filter(kind="job.retry").get()
    assert msg.payload == {
        "ticket_id": str(job.ticket_id),
        "job_id": str(new.id),
        "attempt": 2,
        "previous_job_id": str(job.id),
        "by": "api",
    }
    with pytest.raises(ServiceError, match="newer"):
        retry_job(job)  # only the latest attempt can be retried


def test_only_failed_or_cancelled_jobs_are_retried(side, runtime_env):
    job = side(PartyRole.LEADER)
    with pytest.raises(ServiceError, match="only a failed or cancelled job"):
        retry_job(job)
    set_job_status(job, "cancelled", error="by dave")
    assert retry_job(Job.objects.get(pk=job.pk)).attempt == 2


def test_no_retry_with_a_suspended_partner(side, runtime_env):
    job = failed(side(PartyRole.LEADER))
    Partner.objects.filter(pk=job.ticket.partner_id).update(status=PartnerStatus.SUSPENDED)
    with pytest.raises(ServiceError, match="suspended"):
        retry_job(job)


def test_partner_retry_creates_the_same_attempt_once(side, runtime_env):
    job = failed(side(PartyRole.FOLLOWER))
    payload = {"ticket_id": str(job.ticket_id), "job_id": str(job_id_for(job.ticket_id, 2)), "attempt": 2, "by": "erin"}
    new = apply_remote_retry(job.ticket, payload)
    assert new.id == job_id_for(job.ticket_id, 2) and new.role == PartyRole.FOLLOWER and new.status == "pending"
    assert apply_remote_retry(job.ticket, payload).pk == new.pk  # redelivery changes nothing
    assert Job.objects.filter(ticket=job.ticket).count() == 2


def test_partner_retry_supersedes_our_still_active_attempt(side, runtime_env):
    job = side(PartyRole.FOLLOWER)
    new = apply_remote_retry(job.ticket, {"attempt": 2, "job_id": str(job_id_for(job.ticket_id, 2))})
    assert Job.objects.get(pk=job.pk).status == "cancelled"
    assert new.attempt == 2


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"attempt": 5}, "does not follow"),
        ({"attempt": "x"}, "attempt"),
        ({"attempt": 2, "job_id": "00000000-0000-0000-0000-000000000000"}, "does not match"),
    ],
)
def test_bad_partner_retries_are_refused(side, runtime_env, payload, message):
    job = failed(side(PartyRole.FOLLOWER))
    with pytest.raises(ServiceError, match=message):
        apply_remote_retry(job.ticket, payload)
    assert Job.objects.filter(ticket=job.ticket).count() == 1


def test_partner_retry_refused_by_policy_is_held_as_a_cancelled_attempt(side, runtime_env):
    # Both sides hold the attempt, ended: the partner's copy is cancelled by the job.state it is sent.
    job = failed(side(PartyRole.FOLLOWER))
    partner = job.ticket.partner
    partner.policies = {job.ticket.kind: "always_refuse"}
    partner.save()
    with transaction.atomic():
        refused = apply_remote_retry(job.ticket, {"attempt": 2})
    refused.refresh_from_db()
    assert refused.attempt == 2 and refused.status == "cancelled"
    assert "policy refuses" in refused.error
    assert OutboxMessage.objects.filter(kind="job.state", payload__job_id=str(refused.id)).exists()


def test_start_ticket_run_is_idempotent_per_attempt(side, runtime_env):
    job = side(PartyRole.LEADER)
    with transaction.atomic():
        again = start_ticket_run(job.ticket, attempt=1)
    assert again.pk == job.pk


def test_retry_api_needs_an_approver(api, workspaces, side, runtime_env):
    job = failed(side(PartyRole.LEADER))
    Job.objects.filter(pk=job.pk).update(workspace=workspaces["acme"])
    job.ticket.__class__.objects.filter(pk=job.ticket_id).update(workspace=workspaces["acme"])
    Partner.objects.filter(pk=job.ticket.partner_id).update(workspace=workspaces["acme"])
    url = f"/api/v1/workspaces/acme/jobs/{job.id}/retry/"
    assert api("dave").post(url).status_code == 403  # a member
    assert api("charlie").post(url).status_code == 404  # another workspace
    resp = api("carol").post(url)
    assert resp.status_code == 201, resp.content
    assert resp.json()["attempt"] == 2 and resp.json()["status"] == "pending"
    again = api("carol").post(url)
    assert again.status_code == 400 and "newer" in str(again.json())
