"""Outages show where users look: partner health says whether our messages reach the partner,
a ticket says when its message has not been delivered, and held messages go the moment the
partner is back (a heartbeat from it, or a probe of ours), whatever the backoff has grown to."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apps.partners.models import Partner
from apps.peer import reachability
from apps.peer.models import OutboxMessage, OutboxStatus

pytestmark = pytest.mark.django_db

DOWN = "UNAVAILABLE: failed to connect to all addresses"


def fail_deliveries(partner: Partner, *, error: str = DOWN, attempts: int = 9, wait: dt.timedelta | None = None) -> int:
    """What the delivery task leaves after failed attempts: a grown backoff and the error."""
    Partner.objects.filter(pk=partner.pk).update(last_error=f"2026-11-29 03:00:00 UTC {error}")
    return OutboxMessage.objects.filter(partner=partner, status=OutboxStatus.PENDING).update(
        attempts=attempts, last_error=error, next_attempt_at=timezone.now() + (wait or dt.timedelta(hours=1))
    )


def test_a_partner_our_messages_do_not_reach_is_not_healthy_though_its_heartbeats_arrive(world, browser_client, api):
    # given Beta's heartbeats reach us (fresh last contact) but our messages to it fail
    partner = world["partner"]
    assert fail_deliveries(partner) >= 1
    # then its page says so, with what waits and why
    html = browser_client("alice").get(f"/w/acme/partners/{partner.pk}/").content.decode()
    assert "Not reachable" in html and "Healthy" not in html
    assert "not yet delivered" in html and DOWN in html
    listing = browser_client("alice").get("/w/acme/partners/").content.decode()
    assert "Not reachable" in listing
    # and so does the API
    body = api("alice").get(f"/api/v1/workspaces/acme/partners/{partner.pk}/").json()
    assert body["reachable"] is False
    assert body["pending_messages"] >= 1 and body["failing_messages"] == body["pending_messages"]
    assert body["undelivered_since"] is not None and DOWN in body["last_error"]


def test_a_partner_whose_messages_all_arrived_is_healthy_and_reachable(world, browser_client, api):
    partner = world["partner"]
    OutboxMessage.objects.filter(partner=partner).update(status=OutboxStatus.DELIVERED, delivered_at=timezone.now())
    html = browser_client("alice").get(f"/w/acme/partners/{partner.pk}/").content.decode()
    assert "Healthy" in html
    body = api("alice").get(f"/api/v1/workspaces/acme/partners/{partner.pk}/").json()
    assert body["reachable"] is True and body["pending_messages"] == 0 and body["last_delivered_at"]


def test_a_ticket_shows_not_yet_delivered_while_its_message_waits(world, browser_client, api):
    ticket = world["sent"]
    fail_deliveries(world["partner"])
    page = browser_client("alice").get(f"/w/acme/tickets/{ticket.pk}/").content.decode()
    assert "Not yet delivered to the partner" in page and DOWN in page
    assert api("alice").get(f"/api/v1/workspaces/acme/tickets/{ticket.pk}/").json()["undelivered_messages"] >= 1
    # once delivered, the notice goes
    OutboxMessage.objects.filter(ticket_id=ticket.pk).update(status=OutboxStatus.DELIVERED)
    page = browser_client("alice").get(f"/w/acme/tickets/{ticket.pk}/").content.decode()
    assert "Not yet delivered to the partner" not in page
    assert api("alice").get(f"/api/v1/workspaces/acme/tickets/{ticket.pk}/").json()["undelivered_messages"] == 0


@pytest.fixture
def pushed(monkeypatch):
    """Delivery and probe tasks the code enqueues (partner ids), instead of a broker."""
    out: dict[str, list[str]] = {"deliver": [], "probe": []}
    monkeypatch.setattr("workers.tasks.deliver_outbox.delay", lambda partner_id: out["deliver"].append(partner_id))
    monkeypatch.setattr("workers.tasks.probe_partner.delay", lambda partner_id: out["probe"].append(partner_id))
    return out


def test_the_beat_probes_a_partner_whose_messages_wait_however_long_the_backoff(world, pushed):
    from workers.tasks import deliver_due_outbox

    partner = world["partner"]
    fail_deliveries(partner, wait=dt.timedelta(hours=6))
    deliver_due_outbox()
    assert pushed["probe"] == [str(partner.pk)] and pushed["deliver"] == []


def test_a_partner_that_answers_the_probe_gets_its_messages_at_once(world, pushed, monkeypatch):
    partner = world["partner"]
    n = fail_deliveries(partner)
    # and one never tried, held back as long as the failed one (delivery spreads the wait)
    later = OutboxMessage.objects.filter(partner=partner).first()
    assert later is not None
    OutboxMessage.objects.create(
        seq=later.seq + 100, workspace_id=partner.workspace_id, partner=partner, kind="ticket.withdrawn",
        payload={}, next_attempt_at=later.next_attempt_at,
    )  # fmt: skip
    n += 1
    monkeypatch.setattr("apps.peer.delivery.heartbeat", lambda p, **kw: {"ok": False, "error": DOWN})
    assert reachability.probe(partner.pk) is False
    assert not OutboxMessage.objects.filter(partner=partner, next_attempt_at__lte=timezone.now()).exists()
    monkeypatch.setattr("apps.peer.delivery.heartbeat", lambda p, **kw: {"ok": True})
    assert reachability.probe(partner.pk) is True
    assert OutboxMessage.objects.filter(partner=partner, next_attempt_at__lte=timezone.now()).count() == n
    assert pushed["deliver"] == [str(partner.pk)]


def test_only_messages_held_back_by_an_outage_are_hurried(world, pushed):
    """A message the partner answered with an error keeps its backoff: the partner is up, the message is the problem."""
    partner = world["partner"]
    fail_deliveries(partner, error="INTERNAL: internal error; the message was not applied")
    assert reachability.retry_now(partner.pk) == 0
    assert pushed["deliver"] == []


def test_a_partner_back_before_the_next_beat_gets_its_due_messages_pushed_at_once(world, pushed):
    partner = world["partner"]
    fail_deliveries(partner, attempts=1, wait=dt.timedelta(seconds=-1))  # due, waiting for the beat
    assert reachability.retry_now(partner.pk) == 0
    assert pushed["deliver"] == [str(partner.pk)]
