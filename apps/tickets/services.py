"""Ticket negotiation: the only code that creates tickets or changes their status.

Every change is one transaction: compare-and-set status update, timeline event,
audit event and, where the partner must know, an outbox message.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.audit.services import record
from apps.core.errors import Forbidden, ServiceError
from apps.core.statemachine import StateMachine, transition
from apps.datasets.inspect import label_problem
from apps.datasets.models import Dataset, DatasetGrant, RemoteDataset
from apps.partners.choices import PartnerStatus, Policy
from apps.partners.models import Partner
from apps.peer.outbox import enqueue
from apps.tickets.choices import (
    MODEL_GROUP,
    NOT_APPROVED_OUTCOMES,
    STREAM_KINDS,
    TICKET_MACHINE,
    TICKET_RECONCILE,
    TRAINING_KINDS,
    JobKind,
    PartyRole,
    TicketStatus,
)
from apps.tickets.models import Ticket, TicketEvent
from apps.tickets.params import validate_params
from apps.tickets.sources import clean_stream_source
from apps.workspaces.models import Workspace

S = TicketStatus


def _label(user: Any, source: str) -> str:
    return user.get_username() if getattr(user, "is_authenticated", False) else source


def _move(
    ticket: Ticket,
    target: str,
    *,
    actor: Any,
    source: str,
    comment: str = "",
    side: str = "local",
    extra: dict[str, Any] | None = None,
    sm: StateMachine = TICKET_MACHINE,
) -> None:
    before = ticket.status
    transition(ticket, sm, target, extra=extra)
    label = _label(actor, source) if side == "local" else f"{ticket.partner.name} ({source})"
    TicketEvent.objects.create(
        ticket=ticket, side=side, from_status=before, to_status=target, actor_label=label, comment=comment
    )
    record(
        ticket.workspace,
        f"ticket.{target}",
        ticket,
        actor=actor,
        actor_label=label,
        source=source,
        data={"from": before, "comment": comment},
    )


def _roles(kind: str, local: Dataset, remote: RemoteDataset) -> str:
    """Who leads: the side holding labels. Training needs exactly one such side."""
    if kind == JobKind.PSI:
        return PartyRole.LEADER
    if local.label_column and remote.has_label:
        raise ServiceError(
            "both datasets have a label column; vertical training needs labels on exactly one side",
            field="remote_dataset",
        )
    if local.label_column:
        return PartyRole.LEADER
    if remote.has_label:
        return PartyRole.FOLLOWER
    raise ServiceError(
        "neither dataset has a label column; vertical training needs labels on one side", field="local_dataset"
    )


def _label_refusal(kind: str, role: str, dataset: Dataset | None) -> str | None:
    """Why this side's dataset cannot lead a training job (its label column is not binary 0/1), or None.

    Judged from the statistics stored at registration, so a dataset registered before labels were
    checked is caught here, before the partner approves, not when the job fails.
    """
    if kind not in (*TRAINING_KINDS, JobKind.STREAM_JOIN_TRAIN) or role != PartyRole.LEADER or dataset is None:
        return None
    if not dataset.label_column:
        return f"dataset {dataset.name} has no label column; the leading side of training holds the labels"
    stats = (dataset.stats or {}).get(dataset.label_column) or {}
    problem = label_problem(dataset.label_column, stats)
    return f"dataset {dataset.name}: {problem}" if problem else None


def _serving_refusal(ticket: Ticket) -> str | None:
    """A serve or score ticket: why this side cannot use the model version it names (not here, archived,
    another partner's, not production for serving…), or None."""
    group = MODEL_GROUP.get(ticket.kind)
    if group is None:
        return None
    from apps.registry.serving import model_refusal

    return model_refusal(ticket, group)


@transaction.atomic
def propose_ticket(
    workspace: Workspace,
    *,
    partner: Partner,
    kind: str,
    local_dataset: Dataset,
    remote_dataset: RemoteDataset,
    name: str = "",
    params: dict[str, Any] | None = None,
    comment: str = "",
    stream_source: dict[str, Any] | None = None,
    acting_user: Any = None,
    source: str = "api",
) -> Ticket:
    """Propose a joint job to `partner`; its copy appears there as pending.

    Stream kinds also name this side's `stream_source` (apps/tickets/sources.py), kept on this copy only.
    """
    if kind not in JobKind.values:
        raise ServiceError(f"unknown job kind {kind!r}", field="kind")
    if partner.workspace_id != workspace.id:
        raise ServiceError("unknown partner", field="partner")
    if partner.status != PartnerStatus.CONNECTED:
        raise ServiceError(f"partner {partner.name} is {partner.status}, not connected", field="partner")
    if local_dataset.workspace_id != workspace.id:
        raise ServiceError("unknown dataset", field="local_dataset")
    if remote_dataset.partner_id != partner.id or remote_dataset.revoked:
        raise ServiceError(f"{partner.name} has not granted this dataset to you", field="remote_dataset")
    validated = validate_params(kind, params)
    own_source = clean_stream_source(workspace, kind, stream_source)
    if kind in MODEL_GROUP:
        from apps.registry.serving import model_version_for

        # Each side serves (or scores with) its half of the model version: the side holding the leader's half leads.
        role = model_version_for(workspace, partner, validated, group=MODEL_GROUP[kind]).role
    else:
        role = _roles(kind, local_dataset, remote_dataset)
    if refusal := _label_refusal(kind, role, local_dataset):
        raise ServiceError(refusal, field="local_dataset")
    ticket = Ticket.objects.create(
        workspace=workspace,
        partner=partner,
        name=name or f"{kind}: {local_dataset.name} × {remote_dataset.name}",
        kind=kind,
        role=role,
        is_proposer=True,
        local_dataset=local_dataset,
        remote_dataset_id=remote_dataset.remote_id,
        remote_dataset_name=remote_dataset.name,
        params=validated,
        stream_source=own_source,
        comment=comment,
        expires_at=timezone.now() + dt.timedelta(hours=settings.FEDSITE_TICKET_TTL_HOURS),
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        status=S.DRAFT,
    )
    assert ticket.expires_at is not None  # set just above
    _move(ticket, S.PROPOSED, actor=acting_user, source=source, comment=comment)
    enqueue(
        partner,
        "ticket.proposed",
        {
            "ticket_id": str(ticket.id),
            "name": ticket.name,
            "kind": kind,
            "proposer_role": role,
            "proposer_dataset": {"id": str(local_dataset.id), "name": local_dataset.name},
            "receiver_dataset_id": str(remote_dataset.remote_id),
            "params": validated,
            "comment": comment,
            "expires_at": ticket.expires_at.isoformat(),
            "proposed_by": _label(acting_user, source),
        },
        ticket_id=ticket.id,
    )
    return ticket


@transaction.atomic
def receive_proposal(workspace: Workspace, partner: Partner, payload: dict[str, Any]) -> Ticket:
    """Apply a partner's `ticket.proposed`: a pending copy, then the partner's policy.

    A proposal naming a dataset we never granted to this partner is refused
    (the ticket is kept, as rejected, so both sides see why).
    """
    try:
        ticket_id = uuid.UUID(str(payload["ticket_id"]))
        kind = str(payload["kind"])
        proposer_role = str(payload["proposer_role"])
        receiver_dataset_id = uuid.UUID(str(payload["receiver_dataset_id"]))
        proposer_dataset = payload["proposer_dataset"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ServiceError(f"malformed ticket.proposed: {exc}") from None
    if kind not in JobKind.values:
        raise ServiceError(f"unknown job kind {kind!r}")
    if proposer_role not in PartyRole.values:
        raise ServiceError(f"unknown role {proposer_role!r}")
    existing = Ticket.objects.filter(pk=ticket_id).first()
    if existing is not None:
        if existing.workspace_id != workspace.id or existing.partner_id != partner.id:
            raise ServiceError("ticket id already used")
        return existing
    dataset = Dataset.objects.filter(pk=receiver_dataset_id, workspace=workspace).first()
    granted = dataset is not None and DatasetGrant.objects.filter(dataset=dataset, partner=partner).exists()
    expires = parse_datetime(str(payload.get("expires_at") or "")) or timezone.now() + dt.timedelta(
        hours=settings.FEDSITE_TICKET_TTL_HOURS
    )
    try:
        params = validate_params(kind, payload.get("params"))
    except ServiceError as exc:
        raise ServiceError(f"bad params from partner: {exc.field}: {exc.message}") from None
    ticket = Ticket.objects.create(
        id=ticket_id,
        workspace=workspace,
        partner=partner,
        name=str(payload.get("name") or kind)[:200],
        kind=kind,
        role=PartyRole.FOLLOWER if proposer_role == PartyRole.LEADER else PartyRole.LEADER,
        is_proposer=False,
        local_dataset=dataset if granted else None,
        remote_dataset_id=uuid.UUID(str(proposer_dataset.get("id")))
        if isinstance(proposer_dataset, dict) and proposer_dataset.get("id")
        else None,
        remote_dataset_name=str(proposer_dataset.get("name", ""))[:120] if isinstance(proposer_dataset, dict) else "",
        params=params,
        comment=str(payload.get("comment") or ""),
        expires_at=expires,
        status=S.PENDING,
    )
    label = f"{partner.name} ({payload.get('proposed_by', 'partner')})"
    TicketEvent.objects.create(
        ticket=ticket,
        side=TicketEvent.Side.REMOTE,
        from_status="",
        to_status=S.PROPOSED,
        actor_label=label,
        comment=ticket.comment,
    )
    record(workspace, "ticket.received", ticket, actor_label=label, source="peer", data={"kind": kind})
    if not granted:
        return reject_ticket(
            ticket,
            reason="the dataset named in this ticket was never granted to you",
            acting_user=None,
            source="system",
            _policy=True,
        )
    if refusal := _label_refusal(kind, ticket.role, dataset) or _serving_refusal(ticket):
        return reject_ticket(ticket, reason=refusal, acting_user=None, source="system", _policy=True)
    policy = partner.policy_for(kind)
    if policy == Policy.ALWAYS_ALLOW and kind in STREAM_KINDS:
        # Only a person can say where this side's events arrive: the ticket waits for them.
        return ticket
    if policy == Policy.ALWAYS_ALLOW:
        return approve_ticket(ticket, comment=f"approved by policy ({policy})", acting_user=None, source="system")
    elif policy == Policy.ALWAYS_REFUSE:
        return reject_ticket(
            ticket, reason=f"refused by policy ({policy})", acting_user=None, source="system", _policy=True
        )
    return ticket


def _require_receiver(ticket: Ticket, action: str) -> None:
    if ticket.is_proposer:
        raise Forbidden(f"only {ticket.partner.name} can {action} this ticket; you proposed it")


@transaction.atomic
def approve_ticket(
    ticket: Ticket,
    *,
    comment: str = "",
    dataset: Dataset | None = None,
    stream_source: dict[str, Any] | None = None,
    acting_user: Any = None,
    source: str = "api",
) -> Ticket:
    """The receiver approves (optionally binding its dataset; naming its stream source for stream kinds);
    both sides then create their job."""
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    _require_receiver(ticket, "approve")
    if stream_source or (ticket.kind in STREAM_KINDS and not ticket.stream_source):
        ticket.stream_source = clean_stream_source(ticket.workspace, ticket.kind, stream_source)
    if dataset is not None:
        if dataset.workspace_id != ticket.workspace_id:
            raise ServiceError("unknown dataset", field="dataset")
        if not DatasetGrant.objects.filter(dataset=dataset, partner=ticket.partner).exists():
            raise ServiceError(f"dataset {dataset.name} is not granted to {ticket.partner.name}", field="dataset")
        ticket.local_dataset = dataset
    ticket.save(update_fields=["local_dataset", "stream_source"])
    if ticket.local_dataset is None:
        raise ServiceError("choose which of your datasets this ticket runs on", field="dataset")
    if refusal := _label_refusal(ticket.kind, ticket.role, ticket.local_dataset):
        raise ServiceError(refusal, field="dataset")
    if refusal := _serving_refusal(ticket):
        raise ServiceError(refusal, field=f"params.{MODEL_GROUP[ticket.kind]}.model_version")
    _move(
        ticket,
        S.APPROVED,
        actor=acting_user,
        source=source,
        comment=comment,
        extra={"decision_comment": comment, "decided_at": timezone.now()},
    )
    enqueue(
        ticket.partner,
        "ticket.approved",
        {
            "ticket_id": str(ticket.id),
            "comment": comment,
            "dataset": {"id": str(ticket.local_dataset.id), "name": ticket.local_dataset.name},
            "by": _label(acting_user, source),
        },
        ticket_id=ticket.id,
    )
    from apps.jobs.services import start_ticket_run

    start_ticket_run(ticket, source=source)
    return ticket


@transaction.atomic
def reject_ticket(
    ticket: Ticket, *, reason: str, acting_user: Any = None, source: str = "api", _policy: bool = False
) -> Ticket:
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if not _policy:
        _require_receiver(ticket, "reject")
    if not reason.strip():
        raise ServiceError("say why you reject it", field="reason")
    _move(
        ticket,
        S.REJECTED,
        actor=acting_user,
        source=source,
        comment=reason,
        extra={"decision_comment": reason, "decided_at": timezone.now()},
    )
    enqueue(
        ticket.partner,
        "ticket.rejected",
        {"ticket_id": str(ticket.id), "reason": reason, "by": _label(acting_user, source)},
        ticket_id=ticket.id,
    )
    return ticket


@transaction.atomic
def withdraw_ticket(ticket: Ticket, *, reason: str = "", acting_user: Any = None, source: str = "api") -> Ticket:
    """The proposer withdraws (before the run starts); any job already created here is cancelled.

    The receiver applies the withdrawal unless it had rejected or let the ticket expire
    first (docs/peer.md, "Races"); this copy then adopts that decision when it hears of it.
    """
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if not ticket.is_proposer:
        raise Forbidden("only the proposer can withdraw a ticket; reject it instead")
    _move(ticket, S.WITHDRAWN, actor=acting_user, source=source, comment=reason)
    enqueue(
        ticket.partner,
        "ticket.withdrawn",
        {"ticket_id": str(ticket.id), "reason": reason, "by": _label(acting_user, source)},
        ticket_id=ticket.id,
    )
    _cancel_jobs(ticket, f"the ticket was withdrawn{': ' + reason if reason else ''}", source=source)
    return ticket


def _cancel_jobs(ticket: Ticket, reason: str, *, source: str) -> None:
    """End every active job of a ticket that is no longer approved (the partner hears of each)."""
    from apps.jobs.choices import ACTIVE, JobStatus
    from apps.jobs.services import set_job_status

    for job in ticket.jobs.filter(status__in=ACTIVE).order_by("attempt"):
        set_job_status(job, JobStatus.CANCELLED, error=reason, source=source)


@transaction.atomic
def expire_ticket(ticket: Ticket) -> bool:
    """Expire an undecided ticket past its deadline (each side expires its own copy).

    The receiver's expiry is its decision and goes to the proposer (`ticket.expired`); the
    proposer's own is provisional: a decision the receiver took in time replaces it.
    """
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if ticket.status not in (S.PROPOSED, S.PENDING) or not ticket.expires_at or ticket.expires_at > timezone.now():
        return False
    _move(ticket, S.EXPIRED, actor=None, source="system", comment="no decision before the deadline")
    if not ticket.is_proposer:
        enqueue(
            ticket.partner,
            "ticket.expired",
            {"ticket_id": str(ticket.id), "reason": "no decision before the deadline", "by": "system"},
            ticket_id=ticket.id,
        )
    return True


# --- the partner's moves, and the rule that decides every race (docs/peer.md, "Races") ------


@transaction.atomic
def apply_remote_decision(ticket: Ticket, status: str, payload: dict[str, Any]) -> Ticket:
    """The partner approved, rejected, let expire (it received the ticket) or withdrew (it proposed it)."""
    if status == S.WITHDRAWN:
        return apply_partner_withdrawal(ticket, payload)
    return apply_partner_decision(ticket, status, payload)


def _remote_move(ticket: Ticket, status: str, payload: dict[str, Any], *, source: str = "peer") -> None:
    comment = str(payload.get("comment") or payload.get("reason") or "")
    extra: dict[str, Any] = {}
    if status in (S.APPROVED, S.REJECTED, S.EXPIRED):
        extra = {"decision_comment": comment, "decided_at": timezone.now()}
    ds = payload.get("dataset")
    if isinstance(ds, dict) and ds.get("id"):
        extra["remote_dataset_id"] = uuid.UUID(str(ds["id"]))
        extra["remote_dataset_name"] = str(ds.get("name", ""))[:120]
    _move(ticket, status, actor=None, source=source, comment=comment, side="remote", extra=extra, sm=TICKET_RECONCILE)


@transaction.atomic
def apply_partner_decision(ticket: Ticket, status: str, payload: dict[str, Any], *, source: str = "peer") -> Ticket:
    """At the proposer: the receiver's decision (approved, rejected, expired) is the outcome.

    - Our withdrawal crossed its approval: the receiver applies the withdrawal after its
      approval, so we stay withdrawn; attempt 1 is recorded here as cancelled, as there.
    - It rejected (or expired) before our withdrawal reached it: we adopt that.
    - Our own expiry was provisional: its decision replaces it.
    """
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if status not in (S.APPROVED, S.REJECTED, S.EXPIRED):
        return ticket
    if ticket.status == status:
        # Already adopted from an answer's state: the message may still name the dataset it chose.
        ds = payload.get("dataset")
        if isinstance(ds, dict) and ds.get("id"):
            ticket.remote_dataset_id = uuid.UUID(str(ds["id"]))
            ticket.remote_dataset_name = str(ds.get("name", ""))[:120]
            ticket.save(update_fields=["remote_dataset_id", "remote_dataset_name", "updated_at"])
        return ticket
    if ticket.status == S.WITHDRAWN:
        if status == S.APPROVED:
            from apps.jobs.choices import JobStatus
            from apps.jobs.services import set_job_status, start_ticket_run

            job = start_ticket_run(ticket, source=source, attempt=1)
            set_job_status(job, JobStatus.CANCELLED, error="the ticket was withdrawn", source=source)
            return ticket
        _remote_move(ticket, status, payload, source=source)
        return ticket
    if ticket.status not in (S.PROPOSED, S.EXPIRED):
        return ticket  # already decided the same way (the receiver cannot decide twice)
    _remote_move(ticket, status, payload, source=source)
    if status == S.APPROVED:
        from apps.jobs.services import start_ticket_run

        start_ticket_run(ticket, source=source)
    return ticket


@transaction.atomic
def apply_partner_withdrawal(ticket: Ticket, payload: dict[str, Any], *, source: str = "peer") -> Ticket:
    """At the receiver: the proposer withdrew. It wins unless we rejected or expired the ticket first.

    Winning ends any job of the ticket here (approved or already running); the proposer
    cancels its own. A losing withdrawal changes nothing here: the answer carries our
    state, and the proposer adopts our decision.
    """
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if ticket.status in NOT_APPROVED_OUTCOMES:
        return ticket
    _remote_move(ticket, S.WITHDRAWN, payload, source=source)
    reason = str(payload.get("reason") or "")
    _cancel_jobs(ticket, f"{ticket.partner.name} withdrew the ticket{': ' + reason if reason else ''}", source=source)
    return ticket


def ticket_state(ticket: Ticket) -> dict[str, Any]:
    """This copy's status and its jobs': what an answer to the partner carries."""
    return {
        "ticket_id": str(ticket.id),
        "status": ticket.status,
        "is_proposer": ticket.is_proposer,
        "decision_comment": ticket.decision_comment[:2000],
        "jobs": [
            {"job_id": str(job_id), "attempt": attempt, "status": status, "error": (error or "")[:500]}
            for job_id, attempt, status, error in ticket.jobs.order_by("attempt").values_list(
                "id", "attempt", "status", "error"
            )
        ],
    }


@transaction.atomic
def reconcile_with_partner(ticket: Ticket, remote: dict[str, Any], *, answer_to: str = "") -> list[str]:
    """Adopt what the partner's answer says its copy is, by the same rule its messages follow.

    `remote` is the partner's `ticket_state` (sent with its answer to our message
    `answer_to`). Returns what changed here (empty if nothing did); each change is
    audited as `ticket.reconciled`.
    """
    from apps.jobs.choices import OUTCOME_RANK
    from apps.jobs.services import apply_remote_job_state

    ticket = Ticket.objects.select_for_update(of=("self",)).select_related("partner", "workspace").get(pk=ticket.pk)
    before = ticket.status
    before_jobs = dict(ticket.jobs.values_list("attempt", "status"))
    status = str(remote.get("status") or "")
    payload = {
        "reason": str(remote.get("decision_comment") or "") or f"as {ticket.partner.name}'s copy says ({status})"
    }
    if ticket.is_proposer and status in (S.REJECTED, S.EXPIRED):
        apply_partner_decision(ticket, status, payload, source="reconcile")
    elif ticket.is_proposer and status in (S.APPROVED, S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED):
        apply_partner_decision(ticket, S.APPROVED, payload, source="reconcile")
    elif not ticket.is_proposer and status == S.WITHDRAWN:
        apply_partner_withdrawal(ticket, payload, source="reconcile")
    for job in remote.get("jobs") or []:
        mine = ticket.jobs.filter(attempt=job.get("attempt")).first()
        if mine is not None and str(job.get("status")) in OUTCOME_RANK and job.get("status") != mine.remote_status:
            apply_remote_job_state(mine, {"status": job["status"], "error": job.get("error", "")}, source="reconcile")
    ticket.refresh_from_db()
    after_jobs = dict(ticket.jobs.values_list("attempt", "status"))
    changes = []
    if ticket.status != before:
        changes.append(f"ticket {before} → {ticket.status}")
    changes += [
        f"attempt {a} {before_jobs.get(a, 'none')} → {st}" for a, st in after_jobs.items() if before_jobs.get(a) != st
    ]
    if changes:
        record(
            ticket.workspace,
            "ticket.reconciled",
            ticket,
            actor_label=f"{ticket.partner.name} (answer)",
            source="peer",
            data={"answer_to": answer_to, "partner_status": status, "changes": changes},
        )
    return changes


@transaction.atomic
def set_run_status(ticket: Ticket, status: str, *, comment: str = "", source: str = "system") -> None:
    """Follow the job: approved/failed → running → succeeded | failed | cancelled.

    A ticket whose negotiation ended without approval keeps that outcome; a merged job
    outcome (the partner's run ended worse) may move a finished ticket once more.
    """
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if ticket.status == status or ticket.status in NOT_APPROVED_OUTCOMES + (S.PROPOSED, S.PENDING, S.DRAFT):
        return
    if TICKET_RECONCILE.can(ticket.status, status):
        _move(ticket, status, actor=None, source=source, comment=comment, sm=TICKET_RECONCILE)
