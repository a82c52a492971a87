"""Jobs: created on approval, moved by launcher and runtime reports, mirrored to the partner."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import record
from apps.core.bounds import UINT31, bounded_int, optional_int
from apps.core.errors import ServiceError
from apps.core.statemachine import transition
from apps.jobs.choices import ACTIVE, JOB_MACHINE, JOB_RECONCILE, OUTCOME_RANK, JobStatus
from apps.jobs.models import Job, JobMetric
from apps.peer.outbox import enqueue
from apps.tickets.choices import NOT_APPROVED_OUTCOMES, SCORE_KINDS, PartyRole, TicketStatus

J = JobStatus
LOG_TAIL_LINES = 200
PARTNER_FAILED = "the partner's job failed: "  # how a failure caused by the partner reads
# Progress is mirrored to the partner at most this often (in progress units).
REMOTE_PROGRESS_STEP = 0.05
# A partition worker of a partitioned PSI reports its progress as stage "psi.p<i>of<P>".
PARTITION_STAGE = re.compile(r"^(?P<stage>[a-z_]+)\.p(?P<index>\d{1,3})of(?P<count>\d{1,3})$")
# The result a continual-training runtime reports per published version (runtime/stream/train.py).
STREAM_VERSION = "stream_version"
# What a stream join reports (runtime/stream/step.py): its counters, under split "stream", and the
# stage it shows while its sources deliver nothing.
STREAM_SPLIT = "stream"
STREAM_STATS = ("events_read", "matched", "match_rate", "late_events", "blocks_committed", "lag_s")
STREAM_WAITING = "waiting for data"
STREAM_STATS_EVERY_S = 2


def job_id_for(ticket_id: uuid.UUID | str, attempt: int) -> uuid.UUID:
    """Both sides derive the same job id from the shared ticket id and attempt number."""
    return uuid.uuid5(uuid.UUID(str(ticket_id)), f"attempt-{attempt}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_ticket_run(ticket: Any, *, source: str = "system", attempt: int | None = None) -> Job:
    """Create this side's job for the ticket's next attempt (or the given one) and launch it after commit.

    Idempotent per attempt: if this attempt's job exists, it is returned unchanged.
    """
    from django.conf import settings

    assert transaction.get_connection().in_atomic_block
    if attempt is None:
        attempt = (ticket.jobs.order_by("-attempt").values_list("attempt", flat=True).first() or 0) + 1
    existing = Job.objects.filter(ticket=ticket, attempt=attempt).first()
    if existing is not None:
        return existing
    job = Job.objects.create(
        id=job_id_for(ticket.id, attempt),
        workspace=ticket.workspace,
        ticket=ticket,
        attempt=attempt,
        role=ticket.role,
        launcher=settings.FEDSITE_LAUNCHER,
    )
    record(ticket.workspace, "job.created", job, source=source, data={"ticket": str(ticket.id), "attempt": attempt})
    job_id = str(job.id)
    transaction.on_commit(lambda: _launch(job_id))
    return job


def _register_scores(job_id: str) -> None:
    from workers.tasks import register_job_scores

    register_job_scores.delay(job_id=job_id)


def _launch(job_id: str) -> None:
    from workers.tasks import launch_job

    launch_job.delay(job_id=job_id)


def issue_runtime_token(job: Job) -> str:
    """A fresh per-job token for the runtime's reports (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    Job.objects.filter(pk=job.pk).update(token_hash=hash_token(token))
    job.token_hash = hash_token(token)
    return token


def job_for_token(job_id: uuid.UUID | str, token: str) -> Job | None:
    job = Job.objects.filter(pk=job_id).select_related("ticket", "workspace").first()
    if job is None or not job.token_hash or not secrets.compare_digest(job.token_hash, hash_token(token)):
        return None
    return job


def _state_payload(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "ticket_id": str(job.ticket_id),
        "attempt": job.attempt,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "error": job.error[:2000],
        # The leader's runtime address: the follower launches once it knows it.
        "runtime_address": job.runtime_address if job.role == PartyRole.LEADER else "",
    }


def lock_job(job: Job) -> Job:
    """Lock the job's ticket, then the job: every path takes them in this order (no deadlock
    between a launcher moving the job and a withdrawal or a partner's message ending it)."""
    from apps.tickets.models import Ticket

    Ticket.objects.select_for_update().filter(pk=job.ticket_id).first()
    return Job.objects.select_for_update().get(pk=job.pk)


@transaction.atomic
def set_job_status(
    job: Job,
    status: str,
    *,
    error: str = "",
    source: str = "system",
    actor: Any = None,
    notify_partner: bool = True,
    merge: bool = False,
) -> Job:
    """Move the job (and its ticket) and tell the partner.

    `merge`: the partner's run of this attempt ended worse than ours (OUTCOME_RANK), so a
    finished job may move once more (succeeded → failed | cancelled, failed → cancelled).
    """
    job = lock_job(job)
    if job.status == status:
        return job
    now = timezone.now()
    extra: dict[str, Any] = {}
    if status == J.RUNNING and not job.started_at:
        extra["started_at"] = now
    if status in JOB_MACHINE.terminal:
        extra["finished_at"] = now
        if status == J.SUCCEEDED:
            extra["progress"] = 1.0
    if error:
        extra["error"] = error[:10_000]
    before = job.status
    transition(job, JOB_RECONCILE if merge else JOB_MACHINE, status, extra=extra)
    record(job.workspace, f"job.{status}", job, actor=actor, source=source, data={"from": before, "error": error[:500]})
    _follow_ticket(job, status, error)
    if status == J.SUCCEEDED and ((job.result or {}).get("train") or (job.result or {}).get("tree")):
        from apps.registry.services import register_from_job

        register_from_job(job)
    if status == J.SUCCEEDED and job.role == PartyRole.LEADER and job.ticket.kind in SCORE_KINDS:
        # The leader's scores become a dataset; reading the file may take a while, so a worker does it.
        scored = str(job.id)
        transaction.on_commit(lambda: _register_scores(scored))
    if notify_partner:
        enqueue(job.ticket.partner, "job.state", _state_payload(job), ticket_id=job.ticket_id)
    if (
        status in (J.CANCELLED, J.FAILED)
        and job.handle
        and job.handle.get("state") not in ("launching", "not-started", "finished")
    ):
        # A cancel, or a failure decided here or by the partner: the runtime may still run.
        job_id = str(job.id)
        transaction.on_commit(lambda: _stop_runtime(job_id))
    return job


def _nudge_reconcile() -> None:
    from workers.tasks import reconcile_jobs

    reconcile_jobs.delay()


def _stop_runtime(job_id: str) -> None:
    from workers.tasks import stop_job

    stop_job.delay(job_id=job_id)


def _follow_ticket(job: Job, status: str, error: str) -> None:
    from apps.tickets.services import set_run_status

    ticket = job.ticket
    if ticket.jobs.filter(attempt__gt=job.attempt).exists():
        return  # the ticket follows its latest attempt only
    follows: dict[str, str] = {
        J.RUNNING: TicketStatus.RUNNING,
        J.STARTING: TicketStatus.RUNNING,
        J.SUCCEEDED: TicketStatus.SUCCEEDED,
        J.FAILED: TicketStatus.FAILED,
        J.CANCELLED: TicketStatus.CANCELLED,
    }
    target = follows.get(status)
    if target and ticket.status != target:
        set_run_status(ticket, target, comment=error[:500])


def cancel_job(job: Job, *, acting_user: Any = None, source: str = "api", reason: str = "") -> Job:
    if job.status not in ACTIVE:
        raise ServiceError(f"job is already {job.status}")
    who = acting_user.get_username() if getattr(acting_user, "is_authenticated", False) else source
    return set_job_status(job, J.CANCELLED, error=reason or f"cancelled by {who}", source=source, actor=acting_user)


def _partitions(job: Job) -> dict[str, Any]:
    part = (job.result or {}).get("partitions")
    return dict(part) if isinstance(part, dict) else {}


def _partition_progress(job: Job, stage: str, value: float) -> tuple[float, str] | None:
    """A partition's progress: kept per partition in ``result.partitions``; the job shows their mean."""
    m = PARTITION_STAGE.match(stage)
    if m is None:
        return None
    index, count = int(m["index"]), int(m["count"])
    if not 0 <= index < count:
        return None
    part = _partitions(job)
    progress = {str(k): float(v) for k, v in (part.get("progress") or {}).items()}
    progress[str(index)] = value
    job.result = {**(job.result or {}), "partitions": {**part, "count": count, "progress": progress}}
    return sum(progress.values()) / count, m["stage"]


def _partition_result(job: Job, stage: str, data: dict[str, Any]) -> None:
    part = _partitions(job)
    done = dict(part.get("done") or {})
    done[str(data["partition"])] = data
    job.result = {**(job.result or {}), "partitions": {**part, "count": data.get("partitions"), "done": done}}


PARTITION_ERROR = re.compile(r"\bpartition (?P<index>\d{1,3}) of (?P<count>\d{1,3}):")


def _count_of(job: Job, part: dict[str, Any]) -> int:
    count = part.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    from apps.jobs.launch import psi_partitions

    return psi_partitions(job)


def _failed_partition(job: Job, count: int) -> tuple[int, str] | None:
    """The partition a failure names (``partition <i> of <P>: …``): this side's error first, else the partner's."""
    for text, whose in ((job.error, ""), (job.remote_error, "the partner's side: ")):
        m = PARTITION_ERROR.search(text or "")
        if m and int(m["count"]) == count and 0 <= int(m["index"]) < count:
            return int(m["index"]), whose + text
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def partition_status(job: Job) -> list[dict[str, Any]] | None:
    """A partitioned PSI job's partitions on this side (None unless ``psi.partitions`` > 1).

    For each partition i in 0..P-1: ``state`` (pending, running, succeeded, failed, or stopped:
    cut short because the job ended, e.g. another partition failed), ``progress`` (0–1),
    ``input_size`` (this side's ids in the partition) and ``intersection_size`` once it is done,
    ``reused`` (a retry took the earlier attempt's result instead of running it again; null
    while unknown) and ``error`` (the failure naming it). Built from what the runtime's
    partition workers report: stage ``psi.p<i>of<P>`` progress and each partition's result
    (``result.partitions``); the worker that merges reports the merged result instead of its
    own, whose figures are then the merged totals less the other partitions'.
    """
    result = job.result or {}
    part = _partitions(job)
    count = _count_of(job, part)
    if count <= 1:
        return None
    progress = part.get("progress") or {}
    done = part.get("done") or {}
    merged = result.get("psi") if isinstance(result.get("psi"), dict) else None
    if merged is not None and merged.get("partitions") != count:
        merged = None
    reused_all = set(merged.get("reused_partitions") or []) if merged else set()
    failed = _failed_partition(job, count) if job.status == J.FAILED else None
    rows: list[dict[str, Any]] = []
    for i in range(count):
        entry = done.get(str(i)) if isinstance(done.get(str(i)), dict) else None
        value = progress.get(str(i))
        row: dict[str, Any] = {
            "index": i,
            "state": "pending",
            "progress": max(0.0, min(1.0, float(value))) if isinstance(value, (int, float)) else 0.0,
            "input_size": None,
            "intersection_size": None,
            "reused": None,
            "error": "",
        }
        if entry is not None or merged is not None or job.status == J.SUCCEEDED:
            row["state"], row["progress"] = "succeeded", 1.0
            if entry is not None:
                row["input_size"] = _int_or_none(entry.get("input_size"))
                row["intersection_size"] = _int_or_none(entry.get("intersection_size"))
                row["reused"] = bool(entry.get("reused"))
            elif merged is not None:
                row["reused"] = i in reused_all
        elif failed is not None and failed[0] == i:
            row["state"], row["error"] = "failed", failed[1]
        elif job.status not in ACTIVE:
            row["state"] = "stopped"
        elif value is not None:
            row["state"] = "running"
        rows.append(row)
    # The merging worker's own figures: the merged totals less the other partitions' (when all are known).
    missing = [r for r in rows if r["state"] == "succeeded" and r["input_size"] is None]
    if merged is not None and len(missing) == 1:
        others = [r for r in rows if r is not missing[0]]
        for key in ("input_size", "intersection_size"):
            total = _int_or_none(merged.get(key))
            if total is not None and all(r[key] is not None for r in others):
                missing[0][key] = total - sum(r[key] for r in others)
    return rows


@transaction.atomic
def apply_report(job: Job, events: list[dict[str, Any]]) -> int:
    """Apply a runtime's batch of progress/metric/log/result events; returns how many."""
    job = lock_job(job)
    failure = next((str(ev.get("error") or "")[:10_000] for ev in events if ev.get("type") == "failed"), "")
    if job.status not in ACTIVE:
        if failure and job.status == J.FAILED and job.error.startswith(PARTNER_FAILED):
            # The partner's echo of this very failure got here first; our runtime's own
            # reason is the one this side should show (the partner's stays in remote_error).
            job.error = failure
            job.save(update_fields=["error", "updated_at"])
            record(
                job.workspace, "job.failed", job, source="runtime", data={"error": failure[:500], "corrects": "reason"}
            )
            enqueue(job.ticket.partner, "job.state", _state_payload(job), ticket_id=job.ticket_id)
            return 1
        return 0
    old_progress = job.progress
    lines: list[str] = []
    metrics: list[JobMetric] = []
    shared: list[dict[str, Any]] = []
    for ev in events:
        kind = ev.get("type")
        if kind == "failed":
            continue  # applied below, after the log lines that explain it
        if kind == "progress":
            value = max(0.0, min(1.0, float(ev.get("value", 0.0))))
            stage = str(ev.get("stage", ""))[:32]
            job.progress, job.stage = _partition_progress(job, stage, value) or (value, stage)
        elif kind == "metric":
            m = JobMetric(
                job=job,
                name=str(ev["name"])[:64],
                split=str(ev.get("split") or "train")[:16],
                step=optional_int(ev.get("step"), "step"),
                epoch=optional_int(ev.get("epoch"), "epoch"),
                value=float(ev["value"]),
            )
            metrics.append(m)
            if m.epoch is not None:
                shared.append({"name": m.name, "split": m.split, "step": m.step, "epoch": m.epoch, "value": m.value})
        elif kind == "log":
            lines.append(str(ev.get("line", ""))[:2000])
        elif kind == "result":
            data = ev.get("data") or {}
            key = str(ev.get("stage", "result"))
            if isinstance(data, dict) and isinstance(data.get("partition"), int):
                _partition_result(job, key, data)  # one partition's share; the merged result comes under `key`
            else:
                job.result = {**job.result, key: data}
        else:
            raise ServiceError(f"unknown event type {kind!r}", field="events")
    if lines:
        job.log_tail = "\n".join((job.log_tail.splitlines() + lines)[-LOG_TAIL_LINES:])
    job.save(update_fields=["progress", "stage", "log_tail", "result", "updated_at"])
    store_metrics(job, metrics)
    for ev in events:
        if ev.get("type") == "result" and ev.get("stage") == STREAM_VERSION:
            # Continual training published a version: registered now, while the job keeps running.
            from apps.registry.services import register_stream_version

            register_stream_version(job, ev.get("data") or {})
    if failure:
        set_job_status(job, J.FAILED, error=failure, source="runtime")
    elif job.status == J.STARTING:
        set_job_status(job, J.RUNNING, source="runtime")
    else:
        share = bool(job.ticket.params.get("share_metrics", True))
        # A stream job's counters (events read, match rate, lag…) are operational, like progress: the
        # partner's dashboard shows them beside its own, at most every STREAM_STATS_EVERY_S.
        latest = {m.name: m for m in metrics if m.split == STREAM_SPLIT and m.name in STREAM_STATS}
        stream = [
            {"name": m.name, "split": m.split, "step": m.step, "epoch": None, "value": m.value} for m in latest.values()
        ]
        if stream and not cache.add(f"stream-stats-sent:{job.id}", 1, timeout=STREAM_STATS_EVERY_S):
            stream = []
        if abs(job.progress - old_progress) >= REMOTE_PROGRESS_STEP or (shared and share) or stream:
            payload = _state_payload(job)
            payload["metrics"] = (shared if share else []) + stream
            enqueue(job.ticket.partner, "job.progress", payload, ticket_id=job.ticket_id)
    return len(events)


def stream_status(job: Job) -> dict[str, Any] | None:
    """A stream job's live figures for its page and the API (None for other kinds).

    Each side's latest join counters (the partner's as it last reported them), whether the
    sources are idle ("waiting for data" is a state, not a failure) and the versions published.
    """
    from apps.registry.models import ModelVersion
    from apps.tickets.choices import STREAM_KINDS
    from apps.tickets.sources import describe

    if job.ticket.kind not in STREAM_KINDS:
        return None
    sides: dict[str, dict[str, float | None]] = {}
    for side in (JobMetric.Side.LOCAL, JobMetric.Side.REMOTE):
        sides[side] = {}
        for name in STREAM_STATS:
            point = (
                JobMetric.objects.filter(job=job, side=side, name=name, split=STREAM_SPLIT)
                .order_by("-id")
                .values_list("value", flat=True)
                .first()
            )
            sides[side][name] = point
    versions = [
        {
            "id": str(mv.id),
            "version": mv.sequence,
            "auc": ((mv.metrics or {}).get("progressive") or {}).get("auc"),
            "created_at": mv.created_at.isoformat(),
        }
        for mv in ModelVersion.objects.filter(job=job, sequence__isnull=False).order_by("sequence")
    ]
    return {
        "source": describe(job.ticket.stream_source),
        "waiting_for_data": job.status in ACTIVE and job.stage == STREAM_WAITING,
        "local": sides[JobMetric.Side.LOCAL],
        "partner": sides[JobMetric.Side.REMOTE],
        "versions": versions,
    }


@transaction.atomic
def apply_remote_job_state(job: Job, payload: dict[str, Any], *, source: str = "peer") -> Job:
    """The partner's side of the job moved: show it here; its failure fails ours too.

    Our resulting terminal state goes back to the partner (so its page shows our side
    as failed/cancelled too). If both runs have ended, both sides keep the higher
    outcome of the two (OUTCOME_RANK: a run succeeded only if it did on both sides).
    That cannot loop: a side only moves to a strictly higher outcome.
    """
    job = lock_job(job)
    job.remote_status = str(payload.get("status", ""))[:16]
    job.remote_error = str(payload.get("error", ""))[:10_000]
    progress = payload.get("progress")
    job.remote_progress = float(progress) if isinstance(progress, int | float) else job.remote_progress
    job.remote_updated_at = timezone.now()
    fields = ["remote_status", "remote_error", "remote_progress", "remote_updated_at", "updated_at"]
    address = str(payload.get("runtime_address") or "")[:255]
    learned = False
    if address and job.role == PartyRole.FOLLOWER and job.runtime_address != address:
        if _valid_address(address):
            learned = not job.runtime_address
            job.runtime_address = address
            fields.append("runtime_address")
    job.save(update_fields=fields)
    if learned and job.status == J.PENDING and not job.handle:
        job_id = str(job.id)
        transaction.on_commit(lambda: _launch(job_id))
    metrics = payload.get("metrics") or []
    store_metrics(
        job,
        [
            JobMetric(
                job=job,
                side=JobMetric.Side.REMOTE,
                name=str(m["name"])[:64],
                split=str(m.get("split", "train"))[:16],
                step=optional_int(m.get("step"), "step"),
                epoch=optional_int(m.get("epoch"), "epoch"),
                value=float(m["value"]),
            )
            for m in metrics
            if isinstance(m, dict) and "name" in m and isinstance(m.get("value"), int | float)
        ],
    )
    if job.status in ACTIVE:
        if job.remote_status == J.SUCCEEDED and job.handle:
            # The joint run is over: ours should end too. Look at our runtime now rather than
            # at the next beat (one that stopped without telling us is judged from its exit).
            transaction.on_commit(_nudge_reconcile)
        if job.remote_status == J.FAILED:
            set_job_status(
                job,
                J.FAILED,
                error=f"{PARTNER_FAILED}{job.remote_error or 'no reason given'}",
                source=source,
            )
        elif job.remote_status == J.CANCELLED:
            set_job_status(
                job,
                J.CANCELLED,
                error=job.remote_error or "cancelled by the partner",
                source=source,
            )
    elif OUTCOME_RANK.get(job.remote_status, 0) > OUTCOME_RANK.get(job.status, 0):
        # Both runs ended, the partner's worse: ours takes its outcome (a run succeeds only on both sides).
        reason = job.remote_error or f"the partner's run {job.remote_status}"
        set_job_status(
            job,
            job.remote_status,
            error=reason if job.remote_status == J.CANCELLED else f"{PARTNER_FAILED}{reason}",
            source=source,
            merge=True,
        )
    return job


def _valid_address(address: str) -> bool:
    """host:port with a sane port (the partner's word; the runtime's mTLS still pins its CA)."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536 and " " not in host)


RETRYABLE = (J.FAILED, J.CANCELLED)


def _retry_payload(job: Job, previous: Job, by: str) -> dict[str, Any]:
    return {
        "ticket_id": str(job.ticket_id),
        "job_id": str(job.id),
        "attempt": job.attempt,
        "previous_job_id": str(previous.id),
        "by": by,
    }


@transaction.atomic
def retry_job(job: Job, *, acting_user: Any = None, source: str = "api") -> Job:
    """Run a failed or cancelled job's ticket again as the next attempt; the partner follows.

    The partner receives `job.retry` and creates the same attempt (same job UUID)
    through `apply_remote_retry`.
    """
    from apps.partners.choices import PartnerStatus
    from apps.tickets.models import Ticket

    ticket = Ticket.objects.select_for_update(of=("self",)).select_related("partner").get(pk=job.ticket_id)
    latest = ticket.jobs.order_by("-attempt").first()
    job = Job.objects.get(pk=job.pk)
    if latest is not None and latest.pk != job.pk:
        raise ServiceError(f"attempt {latest.attempt} is newer; retry that one", field="job")
    if job.status not in RETRYABLE:
        raise ServiceError(f"only a failed or cancelled job can be retried; this one is {job.status}")
    if ticket.status in NOT_APPROVED_OUTCOMES:
        raise ServiceError(f"the ticket is {ticket.status}; it cannot run again")
    if ticket.partner.status != PartnerStatus.CONNECTED:
        raise ServiceError(f"partner {ticket.partner.name} is {ticket.partner.status}, not connected")
    who = acting_user.get_username() if getattr(acting_user, "is_authenticated", False) else source
    new = start_ticket_run(ticket, source=source, attempt=job.attempt + 1)
    record(ticket.workspace, "job.retried", new, actor=acting_user, source=source, data={"previous": str(job.id)})
    enqueue(ticket.partner, "job.retry", _retry_payload(new, job, who), ticket_id=ticket.id)
    return new


@transaction.atomic
def apply_remote_retry(ticket: Any, payload: dict[str, Any]) -> Job:
    """The partner retried the ticket: create the same attempt here (idempotent).

    Called by the peer service for a `job.retry` message. Refuses (ServiceError) an
    attempt that does not follow ours. Our previous attempt, if still active, is
    cancelled. On a ticket no longer approved here, or one our policy for its kind now
    refuses, the attempt is recorded as cancelled (so both sides hold it, ended).
    """
    from apps.partners.choices import Policy
    from apps.tickets.models import Ticket

    ticket = Ticket.objects.select_for_update(of=("self",)).select_related("partner").get(pk=ticket.pk)
    try:
        attempt = bounded_int(payload["attempt"], "attempt", UINT31)
    except (KeyError, TypeError, ValueError):
        raise ServiceError("malformed job.retry: attempt", field="attempt") from None
    job_id = str(payload.get("job_id") or "")
    expected = job_id_for(ticket.id, attempt)
    if job_id and job_id != str(expected):
        raise ServiceError("job.retry: job id does not match the ticket and attempt", field="job_id")
    existing = Job.objects.filter(ticket=ticket, attempt=attempt).first()
    if existing is not None:
        return existing
    latest = ticket.jobs.order_by("-attempt").first()
    if latest is None or attempt != latest.attempt + 1:
        have = latest.attempt if latest else 0
        raise ServiceError(f"job.retry: attempt {attempt} does not follow ours ({have})", field="attempt")
    refusal = ""
    if ticket.status in NOT_APPROVED_OUTCOMES:
        refusal = f"the ticket is {ticket.status} here"
    elif ticket.partner.policy_for(ticket.kind) == Policy.ALWAYS_REFUSE:
        refusal = f"our policy refuses {ticket.kind} jobs from {ticket.partner.name}"
    if latest.status in ACTIVE:
        # The partner's run ended before ours heard of it: end ours now; the partner merges
        # our outcome for that attempt with its own.
        set_job_status(latest, J.CANCELLED, error="superseded by the partner's retry", source="peer")
    job = start_ticket_run(ticket, source="peer", attempt=attempt)
    record(
        ticket.workspace,
        "job.retried",
        job,
        actor_label=f"{ticket.partner.name} ({payload.get('by', 'partner')})",
        source="peer",
        data={"previous": str(latest.id)},
    )
    if refusal:
        # Both sides keep the attempt, ended: the partner's job is cancelled by our answer.
        set_job_status(job, J.CANCELLED, error=f"retry refused: {refusal}", source="peer")
    return job


def _point(m: JobMetric) -> tuple[Any, ...]:
    return (m.side, m.name, m.split, m.step, m.epoch)


def store_metrics(job: Job, metrics: list[JobMetric]) -> None:
    """Store metric points, each point (side, name, split, step, epoch) once: a point reported again
    (a retried post, a resumed epoch, a redelivered message, a stream's counters re-read within one
    block) replaces the stored one, so a long-running job's rows grow with its steps, not its time."""
    latest = {_point(m): m for m in metrics}
    points = list(latest)
    for i in range(0, len(points), 200):  # SQLite parses a long OR chain as a deep expression
        same = Q()
        for side, name, split, step, epoch in points[i : i + 200]:
            same |= Q(side=side, name=name, split=split, step=step, epoch=epoch)
        JobMetric.objects.filter(job=job).filter(same).delete()
    JobMetric.objects.bulk_create(latest.values())


def metric_points(job: Job, **filters: str) -> list[JobMetric]:
    """The job's metric points sorted by step (then epoch, side, name, split), each point once per side.

    A point is (side, name, split, step, epoch); a report the runtime or the partner sent again
    keeps its latest value (store_metrics replaces them; rows stored before it did are folded here).
    """
    latest: dict[tuple[Any, ...], JobMetric] = {}
    for m in job.metrics.filter(**filters).order_by("id"):
        latest[(m.side, m.name, m.split, m.step, m.epoch)] = m

    def key(m: JobMetric) -> tuple[Any, ...]:
        return (m.step is None, m.step or 0, m.epoch is None, m.epoch or 0, m.side, m.name, m.split)

    return sorted(latest.values(), key=key)
