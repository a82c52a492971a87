"""Read-only summaries the pages show (no writes here)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.reachability import DeliveryState, delivery_state

CONTACT_FRESH = dt.timedelta(minutes=5)
CERT_WARNING = dt.timedelta(days=14)


@dataclass(frozen=True)
class Health:
    """A partner's health in one word, with the reason."""

    tone: str  # ok | warn | bad | ""
    label: str
    reason: str


def partner_health(partner: Partner, state: DeliveryState | None = None) -> Health:
    """Judged on both directions: the partner's heartbeats reaching us, and our messages reaching it."""
    now = timezone.now()
    if partner.status == PartnerStatus.SUSPENDED:
        return Health("bad", "Suspended", "an admin suspended this partnership")
    if partner.status == PartnerStatus.INVITED:
        return Health("warn", "Invited", "waiting for the partner to accept the invitation")
    if partner.cert_expires_at and partner.cert_expires_at <= now:
        return Health("bad", "Certificate expired", f"expired {partner.cert_expires_at:%Y-%m-%d}")
    state = state or delivery_state(partner)
    if state.failing:
        since = f" since {state.waiting_since:%Y-%m-%d %H:%M} UTC" if state.waiting_since else ""
        return Health(
            "bad",
            "Not reachable",
            f"{state.pending} message{'s' if state.pending != 1 else ''} not delivered{since}"
            + (f"; last error: {state.last_error[:300]}" if state.last_error else ""),
        )
    if state.last_error:
        return Health("warn", "Unreachable from here", f"our last call failed: {state.last_error[:300]}")
    if partner.last_contact_at is None:
        return Health("warn", "No contact yet", "no message has reached the partner yet")
    if now - partner.last_contact_at > CONTACT_FRESH:
        return Health("warn", "Unreachable", f"last contact {partner.last_contact_at:%Y-%m-%d %H:%M} UTC")
    if partner.cert_expires_at and partner.cert_expires_at - now < CERT_WARNING:
        return Health("warn", "Certificate expiring", f"expires {partner.cert_expires_at:%Y-%m-%d}")
    rtt = f", {partner.last_rtt_ms:.0f} ms round trip" if partner.last_rtt_ms is not None else ""
    return Health("ok", "Healthy", f"in contact{rtt}")


def with_health(partners) -> list[tuple[Partner, Health]]:
    """Each partner with its health (a few queries per partner: the outbox is asked, not guessed)."""
    return [(p, partner_health(p)) for p in partners]
