"""A failed delivery's note on the message and on the partner become visible together."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.delivery import _retry_later
from apps.peer.models import OutboxMessage
from apps.workspaces.models import Workspace


def _read_elsewhere(message_pk, partner_pk) -> tuple[int, str, str]:
    """What another connection (another worker, the dashboard) sees right now: committed rows only."""
    seen: list[tuple[int, str, str]] = []

    def read() -> None:
        try:
            m = OutboxMessage.objects.get(pk=message_pk)
            seen.append((m.attempts, m.last_error, Partner.objects.get(pk=partner_pk).last_error))
        finally:
            connections.close_all()

    t = threading.Thread(target=read)
    t.start()
    t.join()
    return seen[0]


@pytest.mark.django_db(transaction=True)
def test_the_messages_attempt_and_the_partners_error_are_written_in_one_transaction():
    ws = Workspace.objects.create(slug="acme", name="Acme")
    partner = Partner.objects.create(workspace=ws, name="beta", status=PartnerStatus.CONNECTED, endpoint="127.0.0.1:1")
    message = OutboxMessage.objects.create(
        seq=1, workspace=ws, partner=partner, kind="ticket.proposed", payload={}, next_attempt_at=timezone.now()
    )
    observed: list[tuple[int, str, str]] = []

    def watch(execute, sql, params, many, context):
        # Around every UPDATE _retry_later runs, look from another connection.
        if sql.lstrip().upper().startswith("UPDATE"):
            observed.append(_read_elsewhere(message.pk, partner.pk))
            result = execute(sql, params, many, context)
            observed.append(_read_elsewhere(message.pk, partner.pk))
            return result
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        _retry_later(partner, message, "UNAVAILABLE: connection refused")
    observed.append(_read_elsewhere(message.pk, partner.pk))

    assert len(observed) >= 5  # both updates were watched
    for attempts, message_error, partner_error in observed:
        # Before: neither; after: both. Never the message's attempt without the partner's error (or back).
        assert (attempts, bool(message_error), bool(partner_error)) in {(0, False, False), (1, True, True)}, observed
    assert observed[-1][0] == 1 and observed[-1][2].endswith("UNAVAILABLE: connection refused")
