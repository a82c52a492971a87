"""Celery tasks. Each takes ids, re-fetches, returns early if the row is gone, and is idempotent.

The work itself lives in service modules; these are thin entry points.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

log = logging.getLogger(__name__)


@shared_task(name="workers.tasks.deliver_outbox", ignore_result=True)
def deliver_outbox(*, partner_id: str) -> int:
    """Push this partner's due messages in order. Retries are scheduled per message
    (exponential backoff in `next_attempt_at`), so the task itself is never retried."""
    from apps.peer.delivery import deliver_pending

    return deliver_pending(partner_id)


@shared_task(name="workers.tasks.deliver_due_outbox", ignore_result=True)
def deliver_due_outbox() -> int:
    """Beat: pick up messages whose backoff has elapsed (pushes happen on commit), and probe
    partners that were unreachable."""
    from apps.peer.models import OutboxMessage, OutboxStatus

    partners = set(
        OutboxMessage.objects.filter(status=OutboxStatus.PENDING, next_attempt_at__lte=timezone.now()).values_list(
            "partner_id", flat=True
        )
    )
    for pid in partners:
        deliver_outbox.delay(partner_id=str(pid))
    # Partners whose messages wait after an outage are probed on every beat, however long
    # the backoff has grown: a partner that is back gets them within seconds.
    from apps.peer.reachability import partners_to_probe

    for pid in partners_to_probe() - partners:
        probe_partner.delay(partner_id=str(pid))
    return len(partners)


@shared_task(name="workers.tasks.probe_partner", ignore_result=True)
def probe_partner(*, partner_id: str) -> bool:
    """Heartbeat a partner our messages wait for; if it answers, deliver them now."""
    from apps.peer.reachability import probe

    return probe(partner_id)


@shared_task(name="workers.tasks.launch_job", bind=True, ignore_result=True, acks_late=True, max_retries=5)
def launch_job(self, *, job_id: str) -> None:
    """Start the runtime for a pending job (a second call for the same job does nothing).

    Retried with backoff only while the launcher's backend is unreachable; the last
    attempt fails the job with the reason instead.
    """
    from apps.jobs.launch import launch
    from apps.jobs.launchers.base import TransientLaunchError

    try:
        launch(job_id, may_retry=self.request.retries < self.max_retries)
    except TransientLaunchError as exc:
        raise self.retry(exc=exc, countdown=min(60, 2 ** (self.request.retries + 1))) from exc


@shared_task(name="workers.tasks.register_job_scores", ignore_result=True, acks_late=True)
def register_job_scores(*, job_id: str) -> None:
    """A score job succeeded on the leader: register its scores as a dataset (idempotent)."""
    from apps.jobs.outputs import register_scores

    register_scores(job_id)


@shared_task(name="workers.tasks.stop_job", ignore_result=True)
def stop_job(*, job_id: str) -> None:
    """Stop the runtime of a cancelled job."""
    from apps.jobs.launch import stop

    stop(job_id)


@shared_task(name="workers.tasks.reconcile_jobs", ignore_result=True)
def reconcile_jobs() -> int:
    """Beat: compare active jobs with their processes or pods; fail the orphans."""
    from apps.jobs.launch import reconcile

    return reconcile()


@shared_task(name="workers.tasks.expire_tickets", ignore_result=True)
def expire_tickets() -> int:
    from apps.tickets.models import Ticket
    from apps.tickets.services import expire_ticket

    due = Ticket.objects.filter(status__in=["proposed", "pending"], expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    )
    return sum(1 for pk in due if expire_ticket(Ticket.objects.get(pk=pk)))


@shared_task(name="workers.tasks.heartbeat_partners", ignore_result=True)
def heartbeat_partners() -> int:
    """Beat: ping connected partners; records last contact, latency and clock skew."""
    from apps.peer.delivery import heartbeat_all

    return heartbeat_all()
