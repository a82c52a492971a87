"""Writing peer messages: `enqueue` inside the transaction, delivery pushed on commit."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.peer.models import OutboxMessage


def enqueue(
    partner: Any, kind: str, payload: dict[str, Any], *, ticket_id: uuid.UUID | str | None = None
) -> OutboxMessage:
    """Queue a message to `partner`; it is sent once the surrounding transaction commits."""
    assert transaction.get_connection().in_atomic_block, "enqueue() belongs in the transaction of the change"
    # Lock the partner row so two writers cannot take the same sequence number.
    type(partner).objects.select_for_update().filter(pk=partner.pk).first()
    last = OutboxMessage.objects.filter(partner=partner).aggregate(m=Max("seq"))["m"] or 0
    message = OutboxMessage.objects.create(
        seq=last + 1,
        workspace_id=partner.workspace_id,
        partner=partner,
        kind=kind,
        ticket_id=ticket_id,
        payload=payload,
        next_attempt_at=timezone.now(),
    )
    partner_id = str(partner.pk)
    transaction.on_commit(lambda: _push(partner_id))
    return message


def _push(partner_id: str) -> None:
    from workers.tasks import deliver_outbox

    deliver_outbox.delay(partner_id=partner_id)
