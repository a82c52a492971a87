"""Whether our messages reach a partner, and getting them there promptly once it is back.

Health as users see it must say whether *our* messages get through, not only
whether the partner's heartbeats reach us: a partner whose worker still sends
heartbeats while its peer service is down looked "healthy" before.

Recovery after an outage, whatever the delivery backoff has grown to:

- While messages wait because the partner was unreachable, the beat probes it
  (a heartbeat on a freshly dialled channel) every few seconds; when it
  answers, the waiting messages are due at once.
- A peer service that starts sends every partner a heartbeat ("I'm back"), and
  any heartbeat we receive from a partner makes our messages waiting for it due
  at once, so both sides retry the moment either returns.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections
from django.db.models import Count, Max, Min, Q, QuerySet
from django.utils import timezone

from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


# --- what users see ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryState:
    """Our side of the conversation with one partner: what waits, since when, and why."""

    pending: int  # messages not delivered yet
    failing: int  # of those, how many were tried and did not get through
    waiting_since: dt.datetime | None  # when the oldest undelivered message was written
    last_error: str  # the last failed call to the partner ("" once a call got through again)
    last_delivered_at: dt.datetime | None

    @property
    def reaches(self) -> bool:
        """Our last calls got through (nothing failed since)."""
        return not self.failing and not self.last_error


def delivery_state(partner: Partner) -> DeliveryState:
    pending = OutboxMessage.objects.filter(partner=partner, status=OutboxStatus.PENDING)
    agg = pending.aggregate(pending=Count("pk"), failing=Count("pk", filter=Q(attempts__gt=0)), since=Min("created_at"))
    delivered = OutboxMessage.objects.filter(partner=partner, status=OutboxStatus.DELIVERED).aggregate(
        at=Max("delivered_at")
    )["at"]
    last_error = partner.last_error
    if agg["failing"] and not last_error:
        last_error = pending.filter(attempts__gt=0).order_by("-seq").values_list("last_error", flat=True).first() or ""
    return DeliveryState(
        pending=agg["pending"],
        failing=agg["failing"],
        waiting_since=agg["since"],
        last_error=last_error,
        last_delivered_at=delivered,
    )


def undelivered(workspace_id: Any, ticket_id: Any) -> OutboxMessageSummary:
    """This workspace's messages about a ticket that the partner has not received yet."""
    q = OutboxMessage.objects.filter(workspace_id=workspace_id, ticket_id=ticket_id, status=OutboxStatus.PENDING)
    agg = q.aggregate(n=Count("pk"), since=Min("created_at"), tried=Max("attempts"))
    error = q.filter(attempts__gt=0).order_by("-seq").values_list("last_error", flat=True).first() or ""
    return OutboxMessageSummary(agg["n"], agg["since"], agg["tried"] or 0, error)


@dataclass(frozen=True)
class OutboxMessageSummary:
    """Undelivered messages of one ticket: how many, since when, and why they wait."""

    count: int
    since: dt.datetime | None
    attempts: int  # the most any of them was tried
    last_error: str


# --- prompt recovery -----------------------------------------------------------------------


def _held(partner_id: Any = None) -> QuerySet[OutboxMessage]:
    """Pending messages an outage holds back: those that failed to connect, and those never
    tried that the failed one's backoff holds back (delivery makes every pending message wait
    as long). A message the partner answered with an error of its own keeps its backoff."""
    from apps.peer.delivery import UNREACHABLE_PREFIXES

    held = Q(last_error="")
    for prefix in UNREACHABLE_PREFIXES:
        held |= Q(last_error__startswith=prefix)
    q = OutboxMessage.objects.filter(status=OutboxStatus.PENDING).filter(held)
    return q.filter(partner_id=partner_id) if partner_id is not None else q


def _waiting_for_partner(partner_id: Any = None) -> QuerySet[OutboxMessage]:
    """Held back and not due yet."""
    return _held(partner_id).filter(next_attempt_at__gt=timezone.now())


def retry_now(partner_id: Any) -> int:
    """The partner is back: its messages held back by an outage are due now; delivery is pushed.

    Also pushed when they are due already but failed before (their retry would otherwise
    wait for the next beat). Returns how many were moved forward.
    """
    moved = _waiting_for_partner(partner_id).update(next_attempt_at=timezone.now())
    if moved or _held(partner_id).filter(attempts__gt=0).exists():
        from workers.tasks import deliver_outbox

        log.info("partner %s is back: %d held message(s) due now", partner_id, moved)
        try:
            deliver_outbox.delay(partner_id=str(partner_id))
        except Exception:  # noqa: BLE001 - broker down: they are due now, so the next beat sends them
            log.warning("could not push delivery to partner %s; the beat will", partner_id, exc_info=True)
    return moved


def partners_to_probe() -> set[Any]:
    """Connected partners with messages held back by an outage."""
    return set(
        _waiting_for_partner()
        .filter(partner__status=PartnerStatus.CONNECTED)
        .exclude(partner__endpoint="")
        .values_list("partner_id", flat=True)
    )


def probe(partner_id: Any) -> bool:
    """Heartbeat a partner whose messages wait; if it answers, they are due at once."""
    from apps.peer.delivery import heartbeat

    partner = Partner.objects.select_related("workspace").filter(pk=partner_id).first()
    if partner is None or partner.status != PartnerStatus.CONNECTED or not partner.endpoint:
        return False
    if not heartbeat(partner, timeout=PROBE_TIMEOUT_S, fresh=True)["ok"]:
        return False
    retry_now(partner_id)
    return True


def announce_started() -> int:
    """A peer service that starts tells every partner it is back, so they retry at once.

    Runs in a thread of the peer service; returns how many partners answered.
    """
    from apps.peer.delivery import heartbeat

    answered = 0
    try:
        partners = list(
            Partner.objects.select_related("workspace").filter(status=PartnerStatus.CONNECTED).exclude(endpoint="")
        )
        for partner in partners:
            try:
                ok = heartbeat(partner, timeout=PROBE_TIMEOUT_S, fresh=True)["ok"]
            except Exception:  # noqa: BLE001 - one broken partner must not stop the others
                log.exception("announcing to %s", partner.name)
                continue
            if ok:
                answered += 1
                retry_now(partner.pk)  # they are up too: what we hold for them can go
    finally:
        close_old_connections()
    return answered
