"""Model versions: list, detail with metrics and lineage, curves of two compared, promote and archive."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.dashboard.access import workspace_page
from apps.dashboard.views.common import act, get_in_workspace, page
from apps.dashboard.views.jobs import metric_points
from apps.registry.choices import STAGE_MACHINE, Promotion, Stage
from apps.registry.models import ModelVersion
from apps.registry.services import decide_promotion, lineage_chain, request_promotion, set_stage
from apps.workspaces.choices import Role


def summary(mv: ModelVersion) -> list[tuple[str, object]]:
    """Headline metrics, whatever shape the runtime stored them in.

    Training stores {"metrics": {"train": {...}, "validation": {...}}, "epochs": n, ...};
    older or hand-made versions may keep the splits at the top level.
    """
    top = mv.metrics if isinstance(mv.metrics, dict) else {}
    nested_metrics = top.get("metrics")
    nested: dict = nested_metrics if isinstance(nested_metrics, dict) else {}
    out: list[tuple[str, object]] = []
    for source in (nested, top):
        for split in ("progressive", "validation", "train", "test", "score"):
            values = source.get(split)
            if isinstance(values, dict):
                out += [(f"{split} {NAMES.get(k, k)}", v) for k, v in values.items() if _number(v)]
    out += [(NAMES.get(k, k.replace("_", " ")), v) for k, v in top.items() if _number(v)]
    return out


def importance(mv: ModelVersion) -> list[tuple[str, float, int]]:
    """A tree model's feature importance for this side's features (gain, split count), largest gain first."""
    raw = (mv.metrics or {}).get("feature_importance") if isinstance(mv.metrics, dict) else None
    if not isinstance(raw, dict):
        return []
    rows = [
        (str(name), float(v.get("gain", 0.0)), int(v.get("splits", 0)))
        for name, v in raw.items()
        if isinstance(v, dict) and _number(v.get("gain", 0.0)) and _number(v.get("splits", 0))
    ]
    return sorted(rows, key=lambda r: -r[1])


NAMES = {
    "auc": "AUC",
    "ks": "KS",
    "best_epoch": "best epoch",
    "rows": "rows trained on",
    "rows_trained": "rows trained on (all versions)",
    "newest_block": "newest block",
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@workspace_page
def model_list(request):
    versions = ModelVersion.objects.filter(workspace=request.workspace).select_related("ticket", "ticket__partner")
    stage = request.GET.get("stage", "")
    if stage in Stage.values:
        versions = versions.filter(stage=stage)
    return page(
        request,
        "dashboard/models/list.html",
        "models",
        versions=versions[:200],
        all_versions=ModelVersion.objects.filter(workspace=request.workspace)[:200],
        stages=Stage.choices,
        stage=stage,
    )


@workspace_page
def model_detail(request, pk):
    mv = get_in_workspace(request, ModelVersion, pk)
    return page(
        request,
        "dashboard/models/detail.html",
        "models",
        mv=mv,
        summary=summary(mv),
        importance=importance(mv),
        can_promote=request.can.approve
        and STAGE_MACHINE.can(mv.stage, Stage.PRODUCTION)
        and mv.promotion not in (Promotion.REQUESTED, Promotion.AWAITING),
        can_decide=request.can.approve and mv.promotion == Promotion.AWAITING,
        can_archive=request.can.approve and STAGE_MACHINE.can(mv.stage, Stage.ARCHIVED),
        can_restore=request.can.approve and STAGE_MACHINE.can(mv.stage, Stage.CANDIDATE),
        others=ModelVersion.objects.filter(workspace=request.workspace).exclude(pk=mv.pk)[:100],
        curves=[{"label": mv.name[:40], "metrics": metric_points(mv.job)}],
        lineage=lineage_chain(mv) if mv.sequence is not None else [],
        lineage_points=version_points(mv) if mv.sequence is not None else [],
    )


def version_points(mv: ModelVersion) -> list[dict]:
    """AUC (and loss) over the versions of `mv`'s continual-training job, for the lineage chart."""
    out = []
    for v in lineage_chain(mv):
        prog = (v.metrics or {}).get("progressive") if isinstance(v.metrics, dict) else None
        prog = prog if isinstance(prog, dict) else {}
        out.append({"version": v.sequence, "id": str(v.id), "auc": prog.get("auc"), "loss": prog.get("loss")})
    return out


def _pick(request, key: str) -> ModelVersion | None:
    try:
        value = uuid.UUID(request.GET.get(key, ""))
    except ValueError:
        return None
    return ModelVersion.objects.filter(workspace=request.workspace, pk=value).select_related("job").first()


@workspace_page
def compare(request):
    a, b = _pick(request, "a"), _pick(request, "b")
    chosen = [mv for mv in (a, b) if mv is not None]
    data = [{"label": f"{'AB'[i]}: {mv.name[:40]}", "metrics": metric_points(mv.job)} for i, mv in enumerate(chosen)]
    return page(
        request,
        "dashboard/models/compare.html",
        "models",
        a=a,
        b=b,
        rows=_compare_rows(a, b) if a and b else [],
        versions=ModelVersion.objects.filter(workspace=request.workspace)[:200],
        compare_data=data,
    )


def _compare_rows(a: ModelVersion, b: ModelVersion) -> list[tuple[str, object, object]]:
    left, right = dict(summary(a)), dict(summary(b))
    names = list(dict.fromkeys([*left, *right]))
    return [(n, left.get(n), right.get(n)) for n in names]


@require_POST
@workspace_page(role=Role.APPROVER)
def stage(request, pk):
    mv = get_in_workspace(request, ModelVersion, pk)
    target = request.POST.get("stage", "")
    back = request.path.rsplit("/", 1)[0] + "/"
    if target not in Stage.values:
        messages.error(request, "Unknown stage.")
        return redirect(back)
    return act(
        request,
        (lambda: request_promotion(mv, acting_user=request.user, source="ui"))
        if target == Stage.PRODUCTION
        else (lambda: set_stage(mv, target, acting_user=request.user, source="ui")),
        success={
            Stage.PRODUCTION: f"Promotion of {mv.name} requested: it turns production with the partner's half.",
            Stage.ARCHIVED: f"{mv.name} is archived."
            + (
                " The partner's half leaves production too; serving stops on both sides."
                if mv.stage == Stage.PRODUCTION
                else ""
            ),
            Stage.CANDIDATE: f"{mv.name} is a candidate again.",
        }[Stage(target)],
        then=back,
    )


@require_POST
@workspace_page(role=Role.APPROVER)
def promotion_decision(request, pk):
    """Approve or refuse the partner's promotion request our `manual` policy held for an approver."""
    mv = get_in_workspace(request, ModelVersion, pk)
    approve = request.POST.get("decision") == "approve"
    back = request.path.rsplit("/", 1)[0] + "/"
    return act(
        request,
        lambda: decide_promotion(
            mv, approve=approve, reason=request.POST.get("reason", "")[:250], acting_user=request.user, source="ui"
        ),
        success=f"{mv.name} is in production on both sides."
        if approve
        else f"The partner's promotion of {mv.name} is refused; it sees your reason.",
        then=back,
    )
