"""Writing audit events: every service function that changes state calls `record`."""

from __future__ import annotations

from typing import Any

from django.db import models

from apps.audit.models import AuditEvent


def record(
    workspace: Any,
    verb: str,
    obj: models.Model | None = None,
    *,
    actor: Any = None,
    actor_label: str = "",
    source: str = "system",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event (call inside the transaction of the change it records)."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    label = actor_label or (user.get_username() if user else source)
    return AuditEvent.objects.create(
        workspace=workspace,
        actor=user,
        actor_label=label[:200],
        source=source,
        verb=verb,
        object_type=(obj._meta.model_name or "") if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        data=data or {},
    )
