"""Model versions: registration after training, promotion and archiving."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.core.statemachine import transition
from apps.partners.choices import PROMOTION_POLICY, Policy
from apps.registry.choices import STAGE_MACHINE, Promotion, Stage
from apps.registry.models import ModelVersion


def model_version_id(job_id: uuid.UUID | str) -> uuid.UUID:
    """Both sides derive the same model version id from the shared job id."""
    return uuid.uuid5(uuid.UUID(str(job_id)), "model-version")


def stream_version_id(job_id: uuid.UUID | str, sequence: int) -> uuid.UUID:
    """Version `sequence` of a continual-training job: both sides derive the same id."""
    return uuid.uuid5(uuid.UUID(str(job_id)), f"stream-version-{sequence}")


def _lineage(job: Any) -> dict[str, Any]:
    ticket = job.ticket
    return {
        "ticket": str(ticket.id),
        "job": str(job.id),
        "local_dataset": {
            "id": str(ticket.local_dataset_id),
            "name": ticket.local_dataset.name if ticket.local_dataset else "",
        },
        "remote_dataset": {"id": str(ticket.remote_dataset_id), "name": ticket.remote_dataset_name},
        "partner": ticket.partner.name,
        "params": ticket.params,
    }


@transaction.atomic
def register_model_version(job: Any, *, artifact_uri: str, metrics: dict[str, Any]) -> ModelVersion:
    ticket = job.ticket
    mv, created = ModelVersion.objects.get_or_create(
        id=model_version_id(job.id),
        defaults={
            "workspace": job.workspace,
            "ticket": ticket,
            "job": job,
            "name": f"{ticket.name} (attempt {job.attempt})",
            "role": job.role,
            "artifact_uri": artifact_uri,
            "metrics": metrics,
            "lineage": _lineage(job),
        },
    )
    if created:
        record(job.workspace, "model_version.registered", mv, source="runtime", data={"job": str(job.id)})
    return mv


@transaction.atomic
def register_stream_version(job: Any, data: dict[str, Any]) -> ModelVersion:
    """Register version N of a continual-training job from its runtime's `stream_version` result (idempotent).

    Its parent is version N-1 of the same job (the weights it continued from), so the versions
    form a chain; its metrics are the progressive validation of the blocks since the previous version, each scored before training on it.
    """
    try:
        sequence = int(data["version"])
        artifact_uri = str(data["model_dir"])
    except (KeyError, TypeError, ValueError):
        raise ServiceError("a stream_version result needs a version number and a model_dir", field="events") from None
    if sequence < 1:
        raise ServiceError("a stream version number starts at 1", field="events")
    ticket = job.ticket
    parent = ModelVersion.objects.filter(id=stream_version_id(job.id, sequence - 1)).first() if sequence > 1 else None
    keys = ("round", "blocks", "newest_block", "event_time_max", "rows_trained", "published_at")
    mv, created = ModelVersion.objects.get_or_create(
        id=stream_version_id(job.id, sequence),
        defaults={
            "workspace": job.workspace,
            "ticket": ticket,
            "job": job,
            "name": f"{ticket.name} v{sequence}",
            "role": job.role,
            "artifact_uri": artifact_uri[:1024],
            "metrics": {**(data.get("metrics") or {}), **{k: data[k] for k in keys if k in data}},
            "lineage": {**_lineage(job), "parent": str(parent.id) if parent else None, "version": sequence},
            "parent": parent,
            "sequence": sequence,
        },
    )
    if created:
        record(
            job.workspace,
            "model_version.registered",
            mv,
            source="runtime",
            data={"job": str(job.id), "version": sequence, "parent": str(parent.id) if parent else None},
        )
    return mv


def lineage_chain(mv: ModelVersion, limit: int = 200) -> list[ModelVersion]:
    """The versions of `mv`'s continual-training job, oldest first (just `mv` for a one-off model)."""
    if mv.sequence is None:
        return [mv]
    return list(
        ModelVersion.objects.filter(workspace=mv.workspace, job=mv.job, sequence__isnull=False).order_by("sequence")[
            :limit
        ]
    )


def register_from_job(job: Any) -> ModelVersion | None:
    """Register this side's half from a succeeded training job's result (idempotent)."""
    result = job.result or {}
    train = result.get("tree") or result.get("train") or {}
    if not train.get("model_dir"):
        return None
    keys = ("metrics", "epochs", "rows", "history", "best_epoch", "trees", "best_iteration", "feature_importance")
    metrics = {k: v for k, v in train.items() if k in keys}
    return register_model_version(job, artifact_uri=str(train["model_dir"]), metrics=metrics)


@transaction.atomic
def set_stage(
    mv: ModelVersion, stage: str, *, acting_user: Any = None, source: str = "api", reason: str = ""
) -> ModelVersion:
    """Move this side's half to `stage`. Leaving production (archiving a production version) is two-party:
    the partner hears `model.demote` and archives its half too, and the serve jobs of the version stop on
    both sides. `source="peer"` is the partner's demotion arriving (nothing is sent back)."""
    mv = ModelVersion.objects.select_for_update().select_related("ticket__partner").get(pk=mv.pk)
    before = mv.stage
    if stage == Stage.PRODUCTION:
        # One production version per ticket lineage: the previous one is archived.
        for other in (
            ModelVersion.objects.select_for_update()
            .filter(workspace=mv.workspace, ticket=mv.ticket, stage=Stage.PRODUCTION)
            .exclude(pk=mv.pk)
        ):
            # The partner replaces its own half the same way when it promotes `mv`: no demotion message.
            transition(other, STAGE_MACHINE, Stage.ARCHIVED, field="stage")
            _stop_serving(other, f"model version {other.name} was replaced in production by {mv.name}", source)
            record(
                mv.workspace,
                "model_version.archived",
                other,
                actor=acting_user,
                source=source,
                data={"replaced_by": str(mv.id)},
            )
    # Production reached, or archived/restored: a pending or refused promotion request is over.
    transition(mv, STAGE_MACHINE, stage, field="stage", extra={"promotion": Promotion.NONE, "promotion_reason": ""})
    data = {"from": before, **({"reason": reason} if reason else {})}
    record(mv.workspace, f"model_version.{stage}", mv, actor=acting_user, source=source, data=data)
    if before == Stage.PRODUCTION and stage != Stage.PRODUCTION:
        _left_production(mv, acting_user=acting_user, source=source, reason=reason)
    return mv


# Two-party promotion ---------------------------------------------------------------------------------------------
# Promoting asks the partner (peer message `model.promote`); each half turns production only when the partner
# holds the same version, not archived. The partner decides by its approval policy for our promotions
# (`model_promotion`, default always_allow: its approvers already approved the training ticket that made it;
# `manual` holds the request for an approver there, `always_refuse` refuses); it answers `model.promoted` or
# `model.promotion_refused` with the reason.
PROMOTE, PROMOTED, REFUSED = "model.promote", "model.promoted", "model.promotion_refused"


def request_promotion(mv: ModelVersion, *, acting_user: Any = None, source: str = "api") -> ModelVersion:
    """Ask the partner to promote its half; ours stays as it is, marked `promotion=requested`, until it answers."""
    from apps.peer.outbox import enqueue

    with transaction.atomic():
        mv = ModelVersion.objects.select_for_update().select_related("ticket__partner").get(pk=mv.pk)
        if mv.stage == Stage.PRODUCTION or mv.promotion == Promotion.REQUESTED:
            return mv  # already done, or already asked: idempotent
        if mv.promotion == Promotion.AWAITING:
            # The partner asked already and waits for us: promoting here is approving its request.
            return decide_promotion(mv, approve=True, acting_user=acting_user, source=source)
        if not STAGE_MACHINE.can(mv.stage, Stage.PRODUCTION):
            raise ServiceError(f"an {mv.stage} model version cannot be promoted; restore it as a candidate first")
        mv.promotion, mv.promotion_reason = Promotion.REQUESTED, ""
        mv.save(update_fields=["promotion", "promotion_reason", "updated_at"])
        enqueue(mv.ticket.partner, PROMOTE, {"model_version_id": str(mv.id)}, ticket_id=mv.ticket_id)
        record(mv.workspace, "model_version.promotion_requested", mv, actor=acting_user, source=source)
    return mv


def _partner_version(workspace: Any, partner: Any, payload: dict[str, Any]) -> tuple[uuid.UUID | None, Any]:
    try:
        mv_id = uuid.UUID(str(payload.get("model_version_id")))
    except (ValueError, TypeError):
        raise ServiceError("model_version_id is missing or not a UUID", field="model_version_id") from None
    mv = ModelVersion.objects.select_for_update().filter(pk=mv_id, workspace=workspace, ticket__partner=partner).first()
    return mv_id, mv


@transaction.atomic
def receive_promotion_request(workspace: Any, partner: Any, payload: dict[str, Any]) -> None:
    """The partner asks us to promote our half (inside the inbox transaction: applied once)."""
    mv_id, mv = _partner_version(workspace, partner, payload)
    reason = ""
    if mv is None:
        reason = "the partner holds no such model version with us"
    elif mv.stage == Stage.ARCHIVED:
        reason = "the partner's half is archived"
    elif mv.stage != Stage.PRODUCTION and mv.promotion != Promotion.REQUESTED:
        # (An approver here asked for the same promotion: that is our consent.)
        # Our approval policy for this partner's promotions, as for its tickets (apps.partners: policy_for).
        policy = partner.policy_for(PROMOTION_POLICY)
        if policy == Policy.ALWAYS_REFUSE:
            reason = f"refused by policy at {workspace.name} ({policy})"
        elif policy == Policy.MANUAL:
            if mv.promotion != Promotion.AWAITING:
                mv.promotion, mv.promotion_reason = Promotion.AWAITING, ""
                mv.save(update_fields=["promotion", "promotion_reason", "updated_at"])
                record(workspace, "model_version.promotion_received", mv, source="peer", data={"policy": policy})
            return  # an approver here decides: decide_promotion answers the partner
    if reason:
        _refuse(workspace, partner, mv_id, mv, reason, source="peer")
        return
    _accept(workspace, partner, mv, source="peer")


def _refuse(workspace: Any, partner: Any, mv_id: Any, mv: Any, reason: str, *, source: str, actor: Any = None) -> None:
    from apps.peer.outbox import enqueue

    enqueue(partner, REFUSED, {"model_version_id": str(mv_id), "reason": reason[:300]})
    if mv is not None and mv.promotion == Promotion.AWAITING:
        ModelVersion.objects.filter(pk=mv.pk).update(promotion=Promotion.NONE, promotion_reason="")
    record(
        workspace,
        "model_version.promotion_refused",
        mv,
        actor=actor,
        source=source,
        data={"id": str(mv_id), "reason": reason},
    )


def _accept(workspace: Any, partner: Any, mv: ModelVersion, *, source: str, actor: Any = None) -> None:
    from apps.peer.outbox import enqueue

    if mv.stage != Stage.PRODUCTION:
        set_stage(mv, Stage.PRODUCTION, source=source, acting_user=actor)
    ModelVersion.objects.filter(pk=mv.pk).update(promotion=Promotion.NONE, promotion_reason="")
    enqueue(partner, PROMOTED, {"model_version_id": str(mv.id)}, ticket_id=mv.ticket_id)


@transaction.atomic
def decide_promotion(
    mv: ModelVersion, *, approve: bool, reason: str = "", acting_user: Any = None, source: str = "api"
) -> ModelVersion:
    """An approver here decides the partner's promotion request that our `manual` policy held back."""
    mv = ModelVersion.objects.select_for_update().select_related("ticket__partner", "workspace").get(pk=mv.pk)
    if mv.promotion != Promotion.AWAITING:
        raise ServiceError("the partner has not asked to promote this model version (or it was decided already)")
    partner = mv.ticket.partner
    if not approve:
        reason = reason.strip()
        who = getattr(acting_user, "username", "") or source
        text = f"refused by an approver at {mv.workspace.name} ({who})" + (f": {reason}" if reason else "")
        _refuse(mv.workspace, partner, mv.id, mv, text, source=source, actor=acting_user)
    elif mv.stage == Stage.ARCHIVED:
        raise ServiceError("this half is archived; restore it as a candidate before approving its promotion")
    else:
        _accept(mv.workspace, partner, mv, source=source, actor=acting_user)
    mv.refresh_from_db()
    return mv


@transaction.atomic
def apply_promotion_answer(workspace: Any, partner: Any, payload: dict[str, Any], *, accepted: bool) -> None:
    """The partner's answer to our request: production together, or the request cleared with its reason."""
    _, mv = _partner_version(workspace, partner, payload)
    if mv is None or mv.promotion != Promotion.REQUESTED:
        return  # not (or no longer) asked: archived meanwhile, or a request the partner made too
    if accepted and mv.stage != Stage.ARCHIVED:
        if mv.stage != Stage.PRODUCTION:
            mv = set_stage(mv, Stage.PRODUCTION, source="peer")
        mv.promotion, mv.promotion_reason = Promotion.NONE, ""
    else:
        reason = str(payload.get("reason") or "refused by the partner")[:300]
        mv.promotion, mv.promotion_reason = Promotion.REFUSED, reason
        record(workspace, "model_version.promotion_refused", mv, source="peer", data={"reason": reason})
    mv.save(update_fields=["promotion", "promotion_reason", "updated_at"])


# Two-party demotion ----------------------------------------------------------------------------------------------
# Leaving production needs no consent: either side may stop using a model, as either side may stop serving it.
# Archiving a production version here sends `model.demote`; the partner archives its half (idempotent: a half
# already out of production is left as it is) and both sides stop the version's serve jobs.
DEMOTE = "model.demote"


def _stop_serving(mv: ModelVersion, reason: str, source: str, acting_user: Any = None) -> int:
    """Cancel this side's active serve jobs of `mv` (each tells the partner, whose job ends too)."""
    from apps.jobs.choices import ACTIVE
    from apps.jobs.models import Job
    from apps.jobs.services import cancel_job
    from apps.tickets.choices import JobKind

    jobs = Job.objects.filter(
        workspace=mv.workspace_id,
        ticket__kind=JobKind.SERVE,
        ticket__params__serve__model_version=str(mv.id),
        status__in=ACTIVE,
    )
    for job in jobs:
        cancel_job(job, acting_user=acting_user, source=source, reason=reason)
    return len(jobs)


def _left_production(mv: ModelVersion, *, acting_user: Any, source: str, reason: str) -> None:
    from apps.peer.outbox import enqueue

    who = "the partner" if source == "peer" else (getattr(acting_user, "username", "") or source)
    _stop_serving(mv, f"model version {mv.name} left production ({who}): serving stopped", source, acting_user)
    if source != "peer":
        enqueue(
            mv.ticket.partner,
            DEMOTE,
            {"model_version_id": str(mv.id), "stage": mv.stage, "reason": reason[:300]},
            ticket_id=mv.ticket_id,
        )
        record(mv.workspace, "model_version.demotion_sent", mv, actor=acting_user, source=source)


@transaction.atomic
def receive_demotion(workspace: Any, partner: Any, payload: dict[str, Any]) -> None:
    """The partner took its half out of production: ours leaves too (applied once; a repeat changes nothing)."""
    _, mv = _partner_version(workspace, partner, payload)
    if mv is None:
        return  # a version we never held (or deleted): nothing to take out of production
    reason = str(payload.get("reason") or "")[:250]
    if mv.stage == Stage.PRODUCTION:
        label = f"archived by {partner.name}" + (f": {reason}" if reason else "")
        set_stage(mv, Stage.ARCHIVED, source="peer", reason=label)
        # Shown on the version's page beside its stage (cleared by its next stage change).
        ModelVersion.objects.filter(pk=mv.pk).update(promotion_reason=label[:300])
    elif mv.promotion in (Promotion.REQUESTED, Promotion.AWAITING):
        # A promotion still being decided is over: the partner no longer wants this version in production.
        ModelVersion.objects.filter(pk=mv.pk).update(promotion=Promotion.NONE, promotion_reason="")
        record(workspace, "model_version.promotion_withdrawn", mv, source="peer", data={"by": partner.name})
