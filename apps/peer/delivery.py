"""Delivering the outbox: per partner, in order per ticket, exactly once, with backoff.

- One worker at a time delivers a partner's messages: it takes a lease on the
  partner row with a compare-and-set update (no transaction is held open over
  the network). Others that find the lease taken return at once; the holder
  looks again after releasing it, so a message committed meanwhile is not left
  for the beat.
- Messages go in `seq` order. Each ticket is a lane (messages outside any
  ticket share one): when a message fails, the rest of its lane waits behind
  it, and other tickets' messages go on, so order holds per ticket and one
  stuck message does not hold up every other ticket.
- A failed message gets `next_attempt_at = now + min(cap, base * 2**(attempts-1))`
  (with jitter); the beat task (`deliver_due_outbox`) re-pushes partners with
  due messages. If the partner is unreachable (UNAVAILABLE, DEADLINE_EXCEEDED)
  the drain stops and every pending message waits as long as the failed one,
  so a partner that is down is not called once per ticket. However long that
  backoff has grown, the beat probes such a partner every few seconds and a
  heartbeat from it (a peer service announces itself when it starts) makes its
  messages due at once (`apps.peer.reachability`).
- The receiver dedupes on the message id, so a message whose acknowledgement
  was lost is re-sent and acknowledged as DUPLICATE without being re-applied.
- A message the receiver refuses as invalid is marked refused and skipped: it
  would never succeed, and must not block the rest of its ticket.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from typing import Any

import grpc
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.processes import is_gone, this_process
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import client
from apps.peer.envelope import HEARTBEAT, build, now_ms
from apps.peer.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = float(getattr(settings, "FEDSITE_PEER_BACKOFF_MAX_S", 300))
# A worker killed mid-delivery holds its partner's outbox this long, unless a worker on the same
# machine sees it is gone (the lease names its holder). Renewed every LEASE_S / 3 after a send,
# and one send lasts at most client.CALL_TIMEOUT_S (10 s): 20 s < 30 s.
LEASE_S = 30
BATCH = 200
# Answers meaning "this message will never be accepted": stop retrying it.
REFUSED_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
# The partner cannot be reached at all: every lane would fail the same way.
UNREACHABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
UNREACHABLE_PREFIXES = tuple(f"{code.name}:" for code in UNREACHABLE_CODES)  # how their errors are recorded
# "Already applied": the receiver has it.
DELIVERED_CODES = {grpc.StatusCode.ALREADY_EXISTS}


def backoff_s(attempts: int) -> float:
    """Delay before attempt `attempts + 1`: 1, 2, 4 … s, capped, with ±10 % jitter."""
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.9, 1.1)


class _Lease:
    """This worker's hold on a partner's outbox: the `delivery_lease_until` value it wrote.

    Renewing and releasing compare-and-set on that value, so a worker whose lease
    ran out can never clear or extend another worker's.
    """

    def __init__(self, partner_id: Any, until: dt.datetime) -> None:
        self.partner_id = partner_id
        self.until = until
        self.renewed = time.monotonic()

    @classmethod
    def acquire(cls, partner_id: Any) -> _Lease | None:
        now = timezone.now()
        until = now + dt.timedelta(seconds=LEASE_S)
        me = this_process()
        taken = (
            Partner.objects.filter(pk=partner_id)
            .filter(Q(delivery_lease_until__isnull=True) | Q(delivery_lease_until__lt=now))
            .update(delivery_lease_until=until, delivery_lease_holder=me)
        )
        if taken == 1:
            return cls(partner_id, until)
        # Held by a worker of this machine that was killed mid-delivery? Take it over now
        # rather than wait for the lease to run out (compare-and-set on what it wrote).
        held = Partner.objects.filter(pk=partner_id).values("delivery_lease_until", "delivery_lease_holder").first()
        if held and held["delivery_lease_holder"] and is_gone(held["delivery_lease_holder"]):
            taken = Partner.objects.filter(
                pk=partner_id,
                delivery_lease_until=held["delivery_lease_until"],
                delivery_lease_holder=held["delivery_lease_holder"],
            ).update(delivery_lease_until=until, delivery_lease_holder=me)
            if taken == 1:
                log.info("took over the delivery lease of %s from %s (gone)", partner_id, held["delivery_lease_holder"])
                return cls(partner_id, until)
        return None

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed < LEASE_S / 3:
            return
        until = timezone.now() + dt.timedelta(seconds=LEASE_S)
        Partner.objects.filter(pk=self.partner_id, delivery_lease_until=self.until).update(delivery_lease_until=until)
        self.until, self.renewed = until, time.monotonic()

    def release(self) -> None:
        Partner.objects.filter(pk=self.partner_id, delivery_lease_until=self.until).update(
            delivery_lease_until=None, delivery_lease_holder=""
        )


def _new_due(partner_id: Any, after_seq: int) -> bool:
    """A due message the last drain did not see (committed while it ran)."""
    return OutboxMessage.objects.filter(
        partner_id=partner_id, status=OutboxStatus.PENDING, seq__gt=after_seq, next_attempt_at__lte=timezone.now()
    ).exists()


def deliver_pending(partner_id: str | uuid.UUID) -> int:
    """Send this partner's due messages in order; returns how many were delivered."""
    delivered = 0
    while True:
        lease = _Lease.acquire(partner_id)
        if lease is None:
            return delivered  # another worker is delivering; it looks again before it lets go
        try:
            result = _drain(partner_id, lease)
        finally:
            lease.release()
        if result is None:
            return delivered
        sent, last_seq, unreachable = result
        delivered += sent
        if unreachable or not _new_due(partner_id, last_seq):
            return delivered


def _drain(partner_id: Any, lease: _Lease) -> tuple[int, int, bool] | None:
    """One pass over the pending messages in `seq` order.

    Returns (delivered, last seq seen, partner unreachable), or None if the
    partner is not connected (a suspended partner's messages wait until it is resumed).
    """
    partner = Partner.objects.select_related("workspace").filter(pk=partner_id).first()
    if partner is None or partner.status != PartnerStatus.CONNECTED or not partner.endpoint:
        return None
    delivered, last_seq, sent_any = 0, 0, False
    blocked: set[uuid.UUID | None] = set()  # lanes (ticket ids) waiting behind an undelivered message
    while True:
        batch = list(
            OutboxMessage.objects.filter(partner=partner, status=OutboxStatus.PENDING, seq__gt=last_seq).order_by(
                "seq"
            )[:BATCH]
        )
        if not batch:
            return delivered, last_seq, False
        for message in batch:
            last_seq = message.seq
            lane = message.ticket_id
            if lane in blocked:
                continue
            if message.next_attempt_at > timezone.now():
                blocked.add(lane)
                continue
            if not sent_any and message.last_error.startswith(UNREACHABLE_PREFIXES):
                # The last pass could not reach the partner: dial afresh rather than fail at once
                # on a channel still waiting out its reconnect backoff.
                client.forget(partner)
            outcome = _send(partner, message)
            sent_any = True
            if outcome == "unreachable":
                return delivered, last_seq, True
            if outcome == "retry":
                blocked.add(lane)
            elif outcome == "delivered":
                if not delivered:
                    Partner.objects.filter(pk=partner.pk).update(last_contact_at=timezone.now(), last_error="")
                delivered += 1
            lease.renew_if_due()


def _send(partner: Partner, message: OutboxMessage) -> str:
    try:
        envelope = build(
            partner, message.kind, message.payload, message_id=message.id, seq=message.seq, ticket_id=message.ticket_id
        )
        ack = client.deliver(partner, envelope)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        error = f"{code.name}: {details}"[:2000]
        if code in DELIVERED_CODES:
            _mark(message, OutboxStatus.DELIVERED, error)
            return "delivered"
        if code in REFUSED_CODES:
            log.warning("%s %s refused by %s: %s", message.kind, message.id, partner.name, error)
            _mark(message, OutboxStatus.REFUSED, error)
            _reconcile(partner, message, _refusal_state(exc))
            return "refused"
        next_attempt = _retry_later(partner, message, error)
        if code in UNREACHABLE_CODES:
            # Everything else waits as long: the partner is probed at the backoff rate.
            OutboxMessage.objects.filter(
                partner=partner, status=OutboxStatus.PENDING, next_attempt_at__lt=next_attempt
            ).update(next_attempt_at=next_attempt)
            return "unreachable"
        return "retry"
    except Exception as exc:  # noqa: BLE001 - a bug or outage here must back off, not block the partner's queue
        log.exception("could not send %s %s to %s", message.kind, message.id, partner.name)
        _retry_later(partner, message, f"{type(exc).__name__}: {exc}"[:2000])
        return "retry"
    _mark(message, OutboxStatus.DELIVERED, "")
    if "state" in ack.DESCRIPTOR.fields_by_name and ack.HasField("state"):
        _reconcile(partner, message, ack.state)
    return "delivered"


# --- the answer's state: a refusal is never a dead end (docs/peer.md, "Races") -------------------


def _refusal_state(exc: grpc.RpcError) -> Any:
    from apps.peer.inbox import STATE_TRAILER
    from fedsite_proto.peer.v1 import peer_pb2

    trailers = getattr(exc, "trailing_metadata", lambda: None)() or ()
    for key, value in trailers:
        if key == STATE_TRAILER and isinstance(value, bytes):
            try:
                return peer_pb2.TicketState.FromString(value)
            except Exception:  # noqa: BLE001 - an unreadable state is as good as none
                log.warning("unreadable ticket state in %s's refusal", "partner")
    return None


def _differs(ticket: Any, remote: dict[str, Any]) -> bool:
    """Whether the partner's copy might still teach ours something (read without locks)."""
    open_ = ("proposed", "pending")
    mine, theirs = ticket.status, remote["status"]
    if mine != theirs and not (mine in open_ and theirs in open_):
        return True
    held = {a: (st, rst) for a, st, rst in ticket.jobs.values_list("attempt", "status", "remote_status")}
    return any(j["attempt"] in held and j["status"] not in held[j["attempt"]] for j in remote["jobs"])


def _reconcile(partner: Partner, message: OutboxMessage, state: Any) -> None:
    """Bring our copy of the message's ticket to what the partner's answer says its copy is.

    Through the ticket service (the same rule as its messages; audited as
    `ticket.reconciled`); the answer is recorded on the outbox row. Never raises:
    delivery goes on whatever happens here.
    """
    if state is None or not message.ticket_id or not state.known:
        return
    from django.db import transaction

    from apps.tickets.models import Ticket
    from apps.tickets.services import reconcile_with_partner

    remote = {
        "status": state.status,
        "decision_comment": state.decision_comment,
        "jobs": [{"attempt": j.attempt, "status": j.status, "error": j.error} for j in state.jobs],
    }
    try:
        ticket = Ticket.objects.filter(pk=message.ticket_id, partner=partner).first()
        if ticket is None or not _differs(ticket, remote):
            return  # the usual case: the answer says what we hold (no lock taken)
        with transaction.atomic():
            changes = reconcile_with_partner(ticket, remote, answer_to=message.kind)
        if changes:
            note = f"partner's copy: {state.status}; reconciled: {'; '.join(changes)}"[:1000]
            before = OutboxMessage.objects.filter(pk=message.pk).values_list("last_error", flat=True).first() or ""
            OutboxMessage.objects.filter(pk=message.pk).update(last_error=f"{before} | {note}" if before else note)
    except Exception:  # noqa: BLE001 - a reconciliation bug must not stop delivery; the next answer retries it
        log.exception("could not reconcile ticket %s with %s's answer", message.ticket_id, partner.name)


def _retry_later(partner: Partner, message: OutboxMessage, error: str) -> dt.datetime:
    now = timezone.now()
    attempts = message.attempts + 1
    next_attempt = now + dt.timedelta(seconds=backoff_s(attempts))
    with transaction.atomic():  # readers (the partner page) see the message's error and the partner's together
        OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.PENDING).update(
            attempts=attempts, next_attempt_at=next_attempt, last_error=error
        )
        Partner.objects.filter(pk=partner.pk).update(last_error=f"{now:%Y-%m-%d %H:%M:%S} UTC {error}"[:2000])
    log.info("delivery of %s to %s failed (attempt %s): %s", message.kind, partner.name, attempts, error)
    return next_attempt


def _mark(message: OutboxMessage, status: str, error: str) -> None:
    OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.PENDING).update(
        status=status, attempts=message.attempts + 1, last_error=error, delivered_at=timezone.now()
    )


# --- heartbeat ---------------------------------------------------------------------------


def heartbeat(partner: Partner, *, timeout: float = 5.0, fresh: bool = False) -> dict[str, Any]:
    """Ping one partner; record last contact, round-trip time, its certificate expiry and clock skew.

    `fresh` dials a new channel (for a partner that was unreachable). The partner takes any
    heartbeat as a sign we are up, and retries what it holds for us at once.
    """
    envelope = build(partner, HEARTBEAT, {"installation": settings.FEDSITE_INSTALLATION_NAME})
    if fresh:
        client.forget(partner)
    start, sent_ms = time.monotonic(), now_ms()
    try:
        ack = client.deliver(partner, envelope, timeout=timeout)
    except grpc.RpcError as exc:
        error = f"{exc.code().name}: {exc.details() or ''}"[:2000]
        Partner.objects.filter(pk=partner.pk).update(last_error=f"{timezone.now():%Y-%m-%d %H:%M:%S} UTC {error}")
        return {"ok": False, "error": error}
    rtt_ms = (time.monotonic() - start) * 1000
    # The partner stamped its clock about half-way through the round trip.
    skew_s = (ack.server_time_ms - (sent_ms + rtt_ms / 2)) / 1000
    expires = dt.datetime.fromisoformat(ack.cert_not_after) if ack.cert_not_after else None
    Partner.objects.filter(pk=partner.pk).update(
        last_contact_at=timezone.now(),
        last_rtt_ms=round(rtt_ms, 2),
        clock_skew_s=round(skew_s, 3),
        cert_expires_at=expires,
        last_error="",
    )
    return {"ok": True, "rtt_ms": rtt_ms, "clock_skew_s": skew_s, "cert_expires_at": expires}


def heartbeat_all() -> int:
    """Beat: heartbeat every connected partner; returns how many answered."""
    ok = 0
    for partner in (
        Partner.objects.select_related("workspace").filter(status=PartnerStatus.CONNECTED).exclude(endpoint="")
    ):
        try:
            ok += heartbeat(partner)["ok"]
        except Exception:  # noqa: BLE001 - one broken partner must not stop the others' heartbeats
            log.exception("heartbeat to %s failed", partner.name)
    return ok
