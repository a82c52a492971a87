"""Online serving of a production model version: the `serve` ticket's checks, and predict.

A `serve` ticket names a model version (``params.serve.model_version``) both sides
hold in production. Its job runs a serving runtime on each side until a side
cancels it (runtime/serve/). On the leader, `predict` forwards a call to its
serving runtime's ``ServingApi`` (gRPC on the address the runtime reported, with
a token derived from the job id); the runtime asks the follower's for its half.
"""

from __future__ import annotations

import hmac
import threading
import uuid
from typing import Any

import grpc
from django.conf import settings

from apps.core.errors import ServiceError, Unavailable
from apps.jobs.choices import JobStatus
from apps.jobs.models import Job
from apps.registry.choices import Stage
from apps.registry.models import ModelVersion
from apps.tickets.choices import JobKind, PartyRole

FIELD = "params.serve.model_version"
MAX_ID_LENGTH = 256
MAX_FEATURES = 1000  # values per id
# The runtime's own answer may take the partner deadline; the web waits this much longer before giving up.
CALL_MARGIN_S = 2.0

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()


def model_version_for(workspace: Any, partner: Any, params: dict[str, Any], *, group: str = "serve") -> ModelVersion:
    """The model version a serve (or score) ticket names, trained with `partner` (else a ServiceError naming why).

    `group` is the ticket's parameter group naming it: ``serve`` needs a production version,
    ``score`` any version not archived.
    """
    field = f"params.{group}.model_version"
    raw = str(((params or {}).get(group) or {}).get("model_version") or "")
    if not raw:
        raise ServiceError(f"name the model version to {group}", field=field)
    try:
        mv_id = uuid.UUID(raw)
    except ValueError:
        raise ServiceError(f"{raw[:60]!r} is not a model version id", field=field) from None
    mv = ModelVersion.objects.select_related("ticket").filter(pk=mv_id, workspace=workspace).first()
    if mv is None:
        raise ServiceError(f"no model version {mv_id} in this workspace", field=field)
    if mv.ticket.partner_id != partner.id:
        raise ServiceError(f"model version {mv.name} was trained with another partner", field=field)
    if group == "serve" and mv.stage != Stage.PRODUCTION:
        raise ServiceError(f"model version {mv.name} is {mv.stage}; promote it to production first", field=field)
    if mv.stage == Stage.ARCHIVED:
        raise ServiceError(f"model version {mv.name} is archived; restore it to candidate first", field=field)
    return mv


def model_refusal(ticket: Any, group: str = "serve") -> str | None:
    """Why this side cannot use the ticket's model version (receiver's check, again at approval), or None."""
    try:
        mv = model_version_for(ticket.workspace, ticket.partner, ticket.params, group=group)
    except ServiceError as exc:
        return exc.message
    if mv.role != ticket.role:
        return (
            f"model version {mv.name} holds the {mv.role}'s half here, but the ticket makes this side the {ticket.role}"
        )
    return None


def serving_refusal(ticket: Any) -> str | None:
    """Why this side cannot serve the ticket's model version, or None."""
    return model_refusal(ticket, "serve")


def serving_token(job: Job) -> str:
    """The bearer token this installation's web process presents to the job's serving runtime."""
    return hmac.new(settings.SECRET_KEY.encode(), f"serve:{job.id}".encode(), "sha256").hexdigest()


def runtime_params(job: Job, api_address: str, api_advertise: str = "") -> dict[str, Any]:
    """The `serve` block of the job's runtime config."""
    ticket = job.ticket
    params = dict(ticket.params.get("serve") or {})
    mv = model_version_for(ticket.workspace, ticket.partner, ticket.params)
    return {
        "model_dir": mv.artifact_uri,
        "api_address": api_address,
        **({"api_advertise": api_advertise} if api_advertise else {}),
        "api_token": serving_token(job),
        "deadline_ms": float(params.get("deadline_ms", 200.0)),
        "max_ids": int(params.get("max_ids", 1000)),
    }


def serving_job(mv: ModelVersion) -> Job | None:
    """The running serve job of this model version on this side (the newest), if any."""
    return (
        Job.objects.filter(
            workspace=mv.workspace_id,
            ticket__kind=JobKind.SERVE,
            ticket__params__serve__model_version=str(mv.id),
            status__in=(JobStatus.STARTING, JobStatus.RUNNING),
        )
        .order_by("-created_at")
        .first()
    )


def _check_request(ids: Any, features: Any, limit: int) -> tuple[list[str], dict[str, dict[str, str]]]:
    if not isinstance(ids, list) or not ids:
        raise ServiceError("give a non-empty list of ids", field="ids")
    if len(ids) > limit:
        raise ServiceError(f"at most {limit} ids per call, got {len(ids)}", field="ids")
    out_ids: list[str] = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, str | int) or not str(i) or len(str(i)) > MAX_ID_LENGTH:
            raise ServiceError(f"every id must be a string of 1 to {MAX_ID_LENGTH} characters", field="ids")
        out_ids.append(str(i))
    if features is None:
        return out_ids, {}
    if not isinstance(features, dict):
        raise ServiceError("must be an object: id -> {column: value}", field="features")
    out: dict[str, dict[str, str]] = {}
    wanted = set(out_ids)
    for key, values in features.items():
        if key not in wanted:
            raise ServiceError(f"features given for {str(key)[:60]!r}, which is not in ids", field="features")
        if not isinstance(values, dict) or len(values) > MAX_FEATURES:
            raise ServiceError(f"features of {key!r} must be an object of column -> value", field="features")
        row: dict[str, str] = {}
        for col, v in values.items():
            if v is None:
                row[str(col)] = ""
            elif isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ServiceError(f"features of {key!r}: {col!r} must be a number or a string", field="features")
            else:
                row[str(col)] = repr(v) if isinstance(v, float) else str(v)
        out[key] = row
    return out_ids, out


def _channel(address: str) -> grpc.Channel:
    with _channels_lock:
        ch = _channels.get(address)
        if ch is None:
            ch = _channels[address] = grpc.insecure_channel(address)
        return ch


def predict(mv: ModelVersion, ids: Any, features: Any = None) -> dict[str, Any]:
    """Scores for `ids` from the model version's serving job: per id a score or the reason there is none.

    Unavailable (503) when no serving job runs, or the partner's half is down or slower than the deadline.
    """
    from fedsite_proto.runtime.v1 import serve_pb2 as pb
    from fedsite_proto.runtime.v1 import serve_pb2_grpc as pb_grpc

    if mv.role != PartyRole.LEADER:
        raise ServiceError(
            "this side holds the follower's half of the model; predictions are served by the leader", field="id"
        )
    job = serving_job(mv)
    if job is None:
        raise Unavailable(f"model version {mv.name} is not being served: start a serve ticket for it")
    serve = (job.ticket.params or {}).get("serve") or {}
    clean_ids, clean_features = _check_request(ids, features, int(serve.get("max_ids", 1000)))
    address = str(((job.result or {}).get("serve") or {}).get("api_address") or "")
    if not address:
        raise Unavailable("the serving runtime is starting; try again in a few seconds")
    deadline_s = float(serve.get("deadline_ms", 200.0)) / 1000
    request = pb.PredictRequest(ids=clean_ids, features={k: pb.Features(values=v) for k, v in clean_features.items()})
    try:
        reply = pb_grpc.ServingApiStub(_channel(address)).Predict(
            request,
            metadata=[("authorization", f"Bearer {serving_token(job)}")],
            timeout=deadline_s + CALL_MARGIN_S,
        )
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise ServiceError(detail or "bad request", field="ids") from None
        if code == grpc.StatusCode.UNAVAILABLE and detail and "partner" in detail:
            raise Unavailable(detail) from None
        raise Unavailable(f"the serving runtime did not answer: {detail or code}") from None
    return {
        "model_version": str(mv.id),
        "job": str(job.id),
        "predictions": [
            {"id": p.id, "score": p.score}
            if p.ok
            else {"id": p.id, "score": None, "reason": p.reason, "error": p.error}
            for p in reply.predictions
        ],
        "elapsed_ms": round(reply.elapsed_ms, 3),
    }


def serving_summary(job: Job) -> dict[str, Any] | None:
    """What the job page shows of a serve job: per side the latest request count and latency, and the
    predictions audited per hour (the partner's when it shares its metrics); None for other kinds."""
    import datetime as dt

    from apps.jobs.models import JobMetric

    if job.ticket.kind != JobKind.SERVE:
        return None
    latest: dict[str, dict[str, float]] = {JobMetric.Side.LOCAL: {}, JobMetric.Side.REMOTE: {}}
    hours: dict[int, dict[str, float]] = {}
    for m in JobMetric.objects.filter(job=job, split="serve").order_by("id"):
        latest.setdefault(m.side, {})[m.name] = m.value
        if m.name == "predictions" and m.step is not None:
            hours.setdefault(m.step, {})[m.side] = m.value
    per_hour = [
        {
            "hour": dt.datetime.fromtimestamp(h * 3600, tz=dt.UTC).strftime("%Y-%m-%d %H:00 UTC"),
            "local": int(v.get(JobMetric.Side.LOCAL, 0)),
            "remote": int(v[JobMetric.Side.REMOTE]) if JobMetric.Side.REMOTE in v else None,
        }
        for h, v in sorted(hours.items(), reverse=True)[:48]
    ]
    return {
        "local": latest[JobMetric.Side.LOCAL],
        "remote": latest[JobMetric.Side.REMOTE],
        "per_hour": per_hour,
        "api_address": ((job.result or {}).get("serve") or {}).get("api_address", ""),
        "model_version": ((job.ticket.params or {}).get("serve") or {}).get("model_version", ""),
    }


def stop_serving_revoked(dataset: Any, partner: Any, *, acting_user: Any = None, source: str = "api") -> int:
    """A grant of `dataset` to `partner` was revoked: cancel the serve jobs that read it (the partner sees why)."""
    from apps.jobs.choices import ACTIVE
    from apps.jobs.services import cancel_job

    stopped = 0
    for job in Job.objects.filter(
        ticket__kind=JobKind.SERVE, ticket__local_dataset=dataset, ticket__partner=partner, status__in=ACTIVE
    ):
        reason = f"the grant of dataset {dataset.name} to {partner.name} was revoked: serving stopped"
        cancel_job(job, acting_user=acting_user, source=source, reason=reason)
        stopped += 1
    return stopped
