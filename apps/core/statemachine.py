"""Explicit transition tables and the one way to change a status.

`transition()` does a compare-and-set update (``UPDATE … WHERE status = old``),
so two workers or two users racing on the same object cannot both win, and
writes the audit event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from apps.core.errors import Conflict, IllegalTransition


@dataclass(frozen=True)
class StateMachine:
    """A named transition table: ``{from_status: {allowed to_status, …}}``."""

    name: str
    transitions: Mapping[str, frozenset[str]]
    terminal: frozenset[str]

    def can(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, frozenset())

    def check(self, current: str, target: str) -> None:
        if not self.can(current, target):
            allowed = sorted(self.transitions.get(current, frozenset()))
            hint = f"allowed from {current}: {', '.join(allowed)}" if allowed else f"{current} is final"
            raise IllegalTransition(f"{self.name} cannot go from {current} to {target} ({hint})")


def machine(name: str, table: Mapping[str, tuple[str, ...]]) -> StateMachine:
    transitions = {src: frozenset(dsts) for src, dsts in table.items()}
    terminal = frozenset(s for s, dsts in transitions.items() if not dsts)
    return StateMachine(name, transitions, terminal)


def transition(
    obj: models.Model,
    sm: StateMachine,
    target: str,
    *,
    field: str = "status",
    extra: dict[str, Any] | None = None,
) -> None:
    """Move `obj` to `target` if the table allows it and nobody moved it first.

    Must run inside a transaction (the caller writes its audit event and outbox
    message in the same one). Updates `obj` in place on success.
    """
    assert transaction.get_connection().in_atomic_block, "transition() needs transaction.atomic()"
    current = getattr(obj, field)
    sm.check(current, target)
    values: dict[str, Any] = {field: target, **(extra or {})}
    if any(f.name == "updated_at" for f in obj._meta.fields):
        values["updated_at"] = timezone.now()
    updated = type(obj)._default_manager.filter(pk=obj.pk, **{field: current}).update(**values)
    if updated != 1:
        obj.refresh_from_db(fields=[field])
        raise Conflict(f"{sm.name} changed to {getattr(obj, field)} meanwhile; reload and try again")
    for key, value in values.items():
        setattr(obj, key, value)
