"""What each kind of partner message does here: a thin map onto the service layer.

Called inside the transaction that also writes the inbox row; a ServiceError
rolls both back and the message is answered as refused.
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.core.bounds import INT64, bounded_int
from apps.core.errors import ServiceError
from apps.partners.models import Partner
from apps.workspaces.models import Workspace


def _uuid(payload: dict[str, Any], key: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(payload[key]))
    except (KeyError, ValueError, TypeError):
        raise ServiceError(f"{key} is missing or not a UUID", field=key) from None


def _ticket(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> Any:
    from apps.tickets.models import Ticket

    ticket = Ticket.objects.filter(pk=_uuid(payload, "ticket_id"), workspace=workspace, partner=partner).first()
    if ticket is None:
        raise ServiceError("unknown ticket", field="ticket_id")
    return ticket


def _decision(status: str, *, from_receiver: bool):
    def apply(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
        from apps.tickets.services import apply_remote_decision

        ticket = _ticket(workspace, partner, payload)
        # Only the receiving side decides; only the proposer withdraws.
        if from_receiver != ticket.is_proposer:
            raise ServiceError(f"the partner cannot mark this ticket {status}")
        apply_remote_decision(ticket, status, payload)

    return apply


def _proposed(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.tickets.services import receive_proposal

    receive_proposal(workspace, partner, payload)


def _job_state(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.jobs.models import Job
    from apps.jobs.services import apply_remote_job_state

    job = Job.objects.filter(pk=_uuid(payload, "job_id"), workspace=workspace, ticket__partner=partner).first()
    if job is None:
        # Refused: the answer carries our copy's state and the partner reconciles to it.
        raise ServiceError("unknown job", field="job_id")
    apply_remote_job_state(job, payload)


def _job_retry(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.jobs import services

    apply_remote_retry = getattr(services, "apply_remote_retry", None)
    if apply_remote_retry is None:
        raise ServiceError("job.retry is not supported by this installation")
    apply_remote_retry(_ticket(workspace, partner, payload), payload)


def _dataset_shared(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.datasets.models import RemoteDataset

    remote_id = _uuid(payload, "id")
    name = str(payload.get("name") or "")[:120]
    if not name:
        raise ServiceError("name is required", field="name")
    if payload.get("revoked"):
        RemoteDataset.objects.filter(workspace=workspace, partner=partner, remote_id=remote_id).update(revoked=True)
        return
    schema = payload.get("schema") or []
    if not isinstance(schema, list):
        raise ServiceError("schema must be a list", field="schema")
    rows = payload.get("row_count")
    rows = (
        bounded_int(rows, "row_count", (0, INT64[1])) if isinstance(rows, int) and not isinstance(rows, bool) else None
    )
    RemoteDataset.objects.update_or_create(
        partner=partner,
        remote_id=remote_id,
        defaults={
            "workspace": workspace,
            "name": name,
            "schema": schema,
            "row_count": rows,
            "has_label": bool(payload.get("has_label")),
            "revoked": False,
        },
    )


def _model_promote(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.registry.services import receive_promotion_request

    receive_promotion_request(workspace, partner, payload)


def _model_demote(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
    from apps.registry.services import receive_demotion

    receive_demotion(workspace, partner, payload)


def _model_answer(accepted: bool):
    def apply(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> None:
        from apps.registry.services import apply_promotion_answer

        apply_promotion_answer(workspace, partner, payload, accepted=accepted)

    return apply


HANDLERS = {
    "ticket.proposed": _proposed,
    "ticket.approved": _decision("approved", from_receiver=True),
    "ticket.rejected": _decision("rejected", from_receiver=True),
    "ticket.expired": _decision("expired", from_receiver=True),
    "ticket.withdrawn": _decision("withdrawn", from_receiver=False),
    "job.state": _job_state,
    "job.progress": _job_state,
    "job.retry": _job_retry,
    "dataset.shared": _dataset_shared,
    "model.promote": _model_promote,
    "model.promoted": _model_answer(True),
    "model.promotion_refused": _model_answer(False),
    "model.demote": _model_demote,
}


def apply_message(workspace: Workspace, partner: Partner, kind: str, payload: dict[str, Any]) -> None:
    handler = HANDLERS.get(kind)
    if handler is None:
        raise ServiceError(f"unknown message kind {kind!r}")
    handler(workspace, partner, payload)
