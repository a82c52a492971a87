"""Model versions: registration after training, promotion and archiving."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.core.statemachine import transition
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
    form a chain; its metrics are the progressive validation on the newest block before training on it.
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
def set_stage(mv: ModelVersion, stage: str, *, acting_user: Any = None, source: str = "api") -> ModelVersion:
    mv = ModelVersion.objects.select_for_update().get(pk=mv.pk)
    before = mv.stage
    if stage == Stage.PRODUCTION:
        # One production version per ticket lineage: the previous one is archived.
        for other in (
            ModelVersion.objects.select_for_update()
            .filter(workspace=mv.workspace, ticket=mv.ticket, stage=Stage.PRODUCTION)
            .exclude(pk=mv.pk)
        ):
            transition(other, STAGE_MACHINE, Stage.ARCHIVED, field="stage")
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
    record(mv.workspace, f"model_version.{stage}", mv, actor=acting_user, source=source, data={"from": before})
    return mv


# Two-party promotion ---------------------------------------------------------------------------------------------
# Promoting asks the partner (peer message `model.promote`); each half turns production only when the partner
# holds the same version, not archived. The partner accepts automatically when its half is valid (its approvers
# already approved the training ticket that made it); it answers `model.promoted` or `model.promotion_refused`.
PROMOTE, PROMOTED, REFUSED = "model.promote", "model.promoted", "model.promotion_refused"


def request_promotion(mv: ModelVersion, *, acting_user: Any = None, source: str = "api") -> ModelVersion:
    """Ask the partner to promote its half; ours stays as it is, marked `promotion=requested`, until it answers."""
    from apps.peer.outbox import enqueue

    with transaction.atomic():
        mv = ModelVersion.objects.select_for_update().select_related("ticket__partner").get(pk=mv.pk)
        if mv.stage == Stage.PRODUCTION or mv.promotion == Promotion.REQUESTED:
            return mv  # already done, or already asked: idempotent
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
    from apps.peer.outbox import enqueue

    mv_id, mv = _partner_version(workspace, partner, payload)
    reason = ""
    if mv is None:
        reason = "the partner holds no such model version with us"
    elif mv.stage == Stage.ARCHIVED:
        reason = "the partner's half is archived"
    if reason:
        enqueue(partner, REFUSED, {"model_version_id": str(mv_id), "reason": reason})
        record(
            workspace, "model_version.promotion_refused", mv, source="peer", data={"id": str(mv_id), "reason": reason}
        )
        return
    if mv.stage != Stage.PRODUCTION:
        set_stage(mv, Stage.PRODUCTION, source="peer")
    ModelVersion.objects.filter(pk=mv.pk).update(promotion=Promotion.NONE, promotion_reason="")
    enqueue(partner, PROMOTED, {"model_version_id": str(mv.id)}, ticket_id=mv.ticket_id)


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
