"""Launching, stopping and reconciling job runtimes (the Celery tasks' bodies).

    launch(job_id)   pending job → runtime started → STARTING (the leader also
                     picks its runtime port and tells the partner the address);
                     a follower waits, still pending, until it knows that address.
    stop(job_id)     a cancelled or failed job's runtime is stopped.
    reconcile()      beat: finished, vanished or never-launched runtimes are
                     judged from the backend (exit code, Job status) and the job
                     moves to succeeded or failed, with the log's last error line;
                     a launch whose worker died is adopted (the runtime it started)
                     or launched again.

Every entry point re-reads the job and is idempotent: a second launch of the
same job does nothing, a stop of a stopped runtime does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import socket
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import IllegalTransition, ServiceError
from apps.datasets.folders import lies_in_workspace, workspace_folders
from apps.jobs.choices import ACTIVE, JobStatus
from apps.jobs.launchers.base import (
    FAILED,
    SUCCEEDED,
    Launcher,
    LaunchError,
    RuntimeSpec,
    RuntimeState,
    TransientLaunchError,
    error_summary,
)
from apps.jobs.models import Job
from apps.tickets.choices import LONG_RUNNING_KINDS, SCORE_KINDS, SERVICE_KINDS, JobKind, PartyRole

log = logging.getLogger(__name__)
J = JobStatus

STEPS_BY_KIND: dict[str, list[str]] = {
    JobKind.PSI: ["psi"],
    JobKind.PSI_VERTICAL_NN: ["psi", "train"],
    JobKind.VERTICAL_NN: ["train"],
    JobKind.PSI_VERTICAL_TREE: ["psi", "tree"],
    JobKind.VERTICAL_TREE: ["tree"],
    # Both steps run side by side in one runtime process (runtime/__main__.py, CONCURRENT_STEPS).
    JobKind.STREAM_JOIN: ["stream_join"],
    JobKind.STREAM_JOIN_TRAIN: ["stream_join", "stream_train"],
    JobKind.SERVE: ["serve"],
    # The score step scores the PSI output when there is one (runtime/train/data.py aligned_path).
    JobKind.SCORE: ["score"],
    JobKind.PSI_SCORE: ["psi", "score"],
}
# How many consecutive ports a leader's runtime listens on: the join's, then continual training's.
PORTS_BY_KIND: dict[str, int] = {JobKind.STREAM_JOIN_TRAIN: 2}

# A claim ("launching") older than this without a handle means the worker died mid-launch.
LAUNCH_STALE_S = 300
# A pending job whose launch task never ran (lost message) is re-enqueued after this.
RELAUNCH_AFTER_S = 60


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def get_launcher(name: str | None = None) -> Launcher:
    """The backend by name (`local` or `kubernetes`); default from FEDSITE_LAUNCHER."""
    name = name or settings.FEDSITE_LAUNCHER
    if name == "local":
        from apps.jobs.launchers.local import LocalLauncher

        return LocalLauncher(on_exit=_nudge_reconcile)
    if name == "kubernetes":
        from apps.jobs.launchers.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_settings()
    raise LaunchError(f"unknown launcher {name!r} (local or kubernetes)")


def _nudge_reconcile() -> None:
    """A local runtime ended: reconcile now rather than at the next beat."""
    from workers.tasks import reconcile_jobs

    reconcile_jobs.delay()


# -- configuration -------------------------------------------------------------


def port_range() -> range:
    spec = str(settings.FEDSITE_RUNTIME_PORTS)
    try:
        lo, _, hi = spec.partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise LaunchError(f"FEDSITE_RUNTIME_PORTS={spec!r}: expected a range such as 17000-17999") from None
    if not (0 < lo_i <= hi_i < 65536):
        raise LaunchError(f"FEDSITE_RUNTIME_PORTS={spec!r}: not a port range")
    return range(lo_i, hi_i + 1)


def choose_port(launcher: Launcher, job: Job, count: int = 1) -> int:
    """A port of FEDSITE_RUNTIME_PORTS that no other active job holds and the backend can bind.

    With `count` > 1 (partitioned PSI on one machine; a stream_join_train leader), the `count` ports from it on are all free.
    """
    used: set[int] = set()
    for handle in Job.objects.filter(status__in=ACTIVE).exclude(pk=job.pk).values_list("handle", flat=True):
        if isinstance(handle, dict) and isinstance(handle.get("port"), int):
            n = handle.get("port_count")
            used.update(range(handle["port"], handle["port"] + (n if isinstance(n, int) and n > 0 else 1)))
    ports = list(port_range())
    start = random.randrange(len(ports))
    available = getattr(launcher, "port_available", lambda p: True)
    for port in ports[start:] + ports[:start]:
        span = range(port, port + count)
        if span[-1] > ports[-1] or any(p in used for p in span):
            continue
        if all(available(p) for p in span):
            return port
    raise LaunchError(f"no free runtime port in FEDSITE_RUNTIME_PORTS={settings.FEDSITE_RUNTIME_PORTS}")


def runtime_tls_files(partner: Any) -> dict[str, str] | None:
    """Our runtime certificate, key and the partner's pinned CA; None only where plaintext is allowed."""
    from apps.peer.identity import runtime_tls_files as tls_files

    try:
        return tls_files(partner)
    except (ValueError, OSError) as exc:
        if not _setting("FEDSITE_RUNTIME_ALLOW_INSECURE", False):
            raise LaunchError(f"no TLS material for the runtime: {exc}") from exc
    return None


def report_url(job: Job) -> str:
    base = (_setting("FEDSITE_RUNTIME_REPORT_URL", "") or settings.FEDSITE_PUBLIC_URL).rstrip("/")
    return f"{base}/api/v1/runtime/jobs/{job.id}/report"


def psi_partitions(job: Job) -> int:
    """The ticket's ``psi.partitions`` (1 unless a psi job asks for more)."""
    if job.ticket.kind != JobKind.PSI:
        return 1
    value = ((job.ticket.params or {}).get("psi") or {}).get("partitions", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def partition_key(job: Job) -> str:
    """The leader's partition key: from this installation's secret and the ticket, never stored.

    The same for every attempt of the ticket (a retry reuses the partitions already done);
    the follower's runtimes receive it from the leader's over mutual TLS (runtime/psi/partition.py).
    """
    secret = str(settings.SECRET_KEY).encode()
    return hmac.new(secret, f"fedsite-psi-partition-key:{job.ticket_id}".encode(), hashlib.sha256).hexdigest()


def build_spec(job: Job, launcher: Launcher, port: int | None) -> RuntimeSpec:
    """The runtime's config for this side of the job (a fresh per-job report token each launch)."""
    from apps.jobs.services import issue_runtime_token

    ticket = job.ticket
    dataset = ticket.local_dataset
    if dataset is None:
        raise LaunchError("the ticket names no dataset on this side")
    folders = workspace_folders(job.workspace)
    if not lies_in_workspace(job.workspace, dataset.uri):
        # Registered before workspaces had folders, or a symlink changed since: never read it.
        raise LaunchError(
            f"dataset {dataset.name}: {dataset.uri} is not inside this workspace's data folders "
            f"({', '.join(str(f) for f in folders)}); the operator moves it with manage.py migrate_data_folders"
        )
    steps = STEPS_BY_KIND.get(ticket.kind)
    if not steps:
        raise LaunchError(f"no runtime steps for job kind {ticket.kind!r}")
    tls = runtime_tls_files(ticket.partner)
    long_running = ticket.kind in LONG_RUNNING_KINDS
    # A long-running job has no deadline; its config still bounds how long a report is retried.
    timeout_s = 0 if long_running else int(_setting("FEDSITE_JOB_TIMEOUT_S", 24 * 3600))
    leader = job.role == PartyRole.LEADER
    params = ticket.params or {}
    config: dict[str, Any] = {
        "version": 1,
        "job_id": str(job.id),
        "role": job.role,
        "peer_server_name": _setting("FEDSITE_RUNTIME_SERVER_NAME", "fedsite-runtime"),
        "data": {
            "path": dataset.uri,
            "id_column": dataset.id_column,
            "label_column": (dataset.label_column or None) if leader else None,
            # The runtime refuses a path that leads out of these (checked again where it runs).
            "folders": [str(f) for f in folders],
        },
        "steps": steps,
        "psi": dict(params.get("psi") or {}),
        "train": dict(params.get("train") or {}),
        "tree": {**(params.get("tree") or {}), "share_metrics": bool(params.get("share_metrics", True))}
        if params.get("tree")
        else {},
        "report": {"url": report_url(job), "token": issue_runtime_token(job)},
        "timeout_s": timeout_s or int(_setting("FEDSITE_JOB_TIMEOUT_S", 24 * 3600)),
    }
    if ticket.kind == JobKind.SERVE:
        from apps.registry.serving import runtime_params

        try:
            config["serve"] = runtime_params(job, *launcher.serving_api_address(str(job.id), job.role, port))
        except ServiceError as exc:
            raise LaunchError(f"cannot serve: {exc.message}") from None
    if ticket.kind in SCORE_KINDS:
        config["score"] = score_config(job)
    if "stream" in params:
        config["stream"] = stream_config(ticket, config["data"])
    if leader:
        assert port is not None
        config["listen_address"] = launcher.listen_address(port)
    else:
        config["peer_address"] = job.runtime_address
    if tls is None:
        config["allow_insecure"] = True
    partitions = psi_partitions(job)
    previous: list[str] = []
    if partitions > 1:
        from apps.jobs.services import job_id_for

        config["psi"]["partition"] = {"ports": launcher.partition_ports}
        if leader:
            config["psi"]["partition"]["key"] = partition_key(job)
        previous = [str(job_id_for(job.ticket_id, a)) for a in range(job.attempt - 1, 0, -1)]
    return RuntimeSpec(
        job_id=str(job.id),
        side=job.role,
        config=config,
        tls_files=tls,
        port=port,
        port_count=PORTS_BY_KIND.get(ticket.kind, 1) if port else 1,
        timeout_s=timeout_s,
        keep_running=ticket.kind in SERVICE_KINDS,
        labels={"workspace": job.workspace.slug, "ticket": str(job.ticket_id)},
        partitions=partitions,
        previous_job_ids=previous,
    )


def score_config(job: Job) -> dict[str, Any]:
    """The `score` block of a score job's runtime config: this side's half of the named model version.

    The runtime picks the scorer by the model's own metadata (split NN or trees).
    """
    from apps.registry.serving import model_refusal, model_version_for

    ticket = job.ticket
    if refusal := model_refusal(ticket, "score"):
        raise LaunchError(f"cannot score: {refusal}")
    mv = model_version_for(ticket.workspace, ticket.partner, ticket.params, group="score")
    params = dict(ticket.params.get("score") or {})
    return {"model_dir": mv.artifact_uri, "batch_size": int(params.get("batch_size", 4096))}


def stream_config(ticket: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The runtime's `stream` block from the ticket's shared parameters and this side's source
    (runtime/stream/params.py reads it); a folder source becomes `data.path`, checked again where it now leads."""
    from apps.tickets.sources import clean_stream_source

    source = ticket.stream_source or {}
    if not source:
        raise LaunchError("the ticket names no stream source on this side")
    named = {k: source[k] for k in ("kind", "location", "stream", "time_column") if k in source}
    try:
        cleaned = clean_stream_source(ticket.workspace, ticket.kind, named)
    except ServiceError as exc:
        raise LaunchError(f"stream source: {exc.message}") from None
    shared = ticket.params.get("stream") or {}
    out: dict[str, Any] = {
        "source": cleaned["kind"],
        "time_column": cleaned["time_column"],
        "max_delay_s": shared.get("max_delay_s", 600.0),
        "max_batch_events": shared.get("block_size", 4096),
        "idle_timeout_s": shared.get("idle_timeout_s", 300.0),
    }
    if ticket.kind == JobKind.STREAM_JOIN_TRAIN:
        out["publish_every_blocks"] = shared.get("publish_every_blocks", 10)
        out["publish_every_minutes"] = shared.get("publish_every_minutes", 0.0)
    if cleaned["kind"] == "nats":
        out["nats"] = {"url": cleaned["url"], "stream": cleaned["stream"], "subject": cleaned["location"]}
        data["path"] = ""
    else:
        data["path"] = cleaned["path"]
    return out


# -- launch --------------------------------------------------------------------


def launch(job_id: str, *, may_retry: bool = False) -> str:
    """Start this side's runtime for a pending job. Returns what happened (for logs and tests).

    With `may_retry`, a transient backend error (API unreachable, 5xx) releases the
    claim and raises TransientLaunchError so the task retries; otherwise it fails the job.
    """
    from apps.jobs.services import set_job_status

    job = (
        Job.objects.select_related("ticket", "ticket__partner", "ticket__local_dataset", "workspace")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        return "gone"
    if job.status != J.PENDING or job.handle:
        return "skipped"
    leader = job.role == PartyRole.LEADER
    if not leader and not job.runtime_address:
        log.info("job %s waits for the leader's runtime address", job_id)
        return "waiting"
    try:
        launcher = get_launcher(job.launcher or None)
    except LaunchError as exc:
        set_job_status(job, J.FAILED, error=str(exc), source="launcher")
        return "failed"

    port: int | None = None
    count = 1  # ports this side's runtimes take from `port` on (partitioned PSI on one machine: P)
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status != J.PENDING or locked.handle:
            return "skipped"
        try:
            if leader:
                partitions = psi_partitions(job)
                count = (
                    partitions
                    if partitions > 1 and launcher.partition_ports == "offset"
                    else PORTS_BY_KIND.get(job.ticket.kind, 1)
                )
                port = choose_port(launcher, locked, count)
                host = launcher.runtime_host if partitions == 1 else launcher.partition_host
                locked.runtime_address = host(str(job.id), job.role, port)
        except LaunchError as exc:
            port = None
            claim_error = str(exc)
        else:
            claim_error = ""
        locked.handle = {
            "backend": launcher.name,
            "state": "launching",
            "since": time.time(),
            "port": port,
            "worker": _this_worker(),
            **({"port_count": count} if count > 1 else {}),
        }
        locked.save(update_fields=["handle", "runtime_address", "updated_at"])
    job.refresh_from_db()
    if claim_error:
        set_job_status(job, J.FAILED, error=f"could not start the runtime: {claim_error}", source="launcher")
        return "failed"

    try:
        spec = build_spec(job, launcher, port)
        handle = launcher.start(spec)
    except TransientLaunchError as exc:
        if may_retry:
            # Release the claim: the retried task starts over (port and all).
            Job.objects.filter(pk=job.pk, status=J.PENDING).update(handle={}, updated_at=timezone.now())
            raise
        Job.objects.filter(pk=job.pk).update(handle={"backend": launcher.name, "state": "not-started", "port": port})
        error = f"could not start the runtime: its backend stayed unavailable ({exc})"
        set_job_status(job, J.FAILED, error=error, source="launcher")
        return "failed"
    except (LaunchError, ServiceError) as exc:
        Job.objects.filter(pk=job.pk).update(handle={"backend": launcher.name, "state": "not-started", "port": port})
        set_job_status(job, J.FAILED, error=f"could not start the runtime: {exc}", source="launcher")
        return "failed"
    Job.objects.filter(pk=job.pk).update(handle=handle, updated_at=timezone.now())
    job.handle = handle
    try:
        set_job_status(job, J.STARTING, source="launcher")
    except IllegalTransition:
        # Cancelled (or failed by the partner) while we were starting it: stop what we started.
        launcher.stop(handle)
        return "stopped"
    return "started"


def stop(job_id: str) -> str:
    """Stop the runtime of a job that is no longer active (idempotent)."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return "gone"
    handle = job.handle or {}
    if handle.get("state") in ("launching", "not-started", "finished") or not handle:
        return "nothing"
    try:
        get_launcher(handle.get("backend") or job.launcher or None).stop(handle)
    except LaunchError as exc:
        log.warning("could not stop the runtime of job %s: %s", job_id, exc)
        return "failed"
    return "stopped"


# -- reconcile -----------------------------------------------------------------


def _finish(job: Job, state: RuntimeState, launcher: Launcher | None = None) -> bool:
    """The runtime is done: record how it ended and move the job, in one transaction.

    The handle is marked finished (so the terminal status does not "stop" it, which on
    Kubernetes would delete the finished Job and its logs before the TTL) in the same
    commit as the status change: a worker killed in between leaves neither, and the next
    reconcile judges the runtime again. A result the runtime left in its job folder (its
    reports may not have reached a web that was down) fills in what the reports missed,
    so a succeeded training job still registers its model half.
    """
    from apps.jobs.services import lock_job, set_job_status

    result = _stored_result(launcher, job.handle or {}) if state.state == SUCCEEDED else {}
    if state.state != SUCCEEDED and launcher is not None and (job.handle or {}).get("partitions"):
        # One partition failed: stop the others now (a finished handle is not stopped later).
        try:
            launcher.stop(job.handle)
        except LaunchError as exc:
            log.warning("could not stop the other partitions of job %s: %s", job.pk, exc)
    try:
        with transaction.atomic():
            locked = lock_job(job)  # ticket, then job: the order every path takes
            if locked.status not in ACTIVE:
                return False
            locked.handle = {**(locked.handle or {}), "state": "finished", "exit_code": state.exit_code}
            fields = ["handle", "updated_at"]
            if state.log_tail and not locked.log_tail:
                locked.log_tail = state.log_tail
                fields.append("log_tail")
            missing = {stage: data for stage, data in result.items() if stage not in (locked.result or {})}
            if missing:
                locked.result = {**(locked.result or {}), **missing}
                fields.append("result")
            locked.save(update_fields=fields)
            if state.state == SUCCEEDED:
                set_job_status(locked, J.SUCCEEDED, source="launcher")
            else:
                set_job_status(locked, J.FAILED, error=state.error or "the runtime failed", source="launcher")
    except IllegalTransition:
        return False
    return True


def _stored_result(launcher: Launcher | None, handle: dict[str, Any]) -> dict[str, Any]:
    """The per-step results the runtime wrote into its job folder ({} if none or unreadable)."""
    if launcher is None:
        return {}
    try:
        return launcher.read_result(handle)
    except (LaunchError, OSError, ValueError) as exc:
        log.warning("cannot read the stored result of %s: %s", handle.get("name") or handle.get("pid"), exc)
        return {}


def _finished_state(launcher: Launcher | None, handle: dict[str, Any]) -> RuntimeState:
    """How a runtime whose handle says finished ended: the backend's word if it still has one, else the handle's."""
    if launcher is not None:
        try:
            state = launcher.poll(handle)
        except LaunchError:
            state = None
        if state is not None and state.state in (SUCCEEDED, FAILED):
            return state
    code = handle.get("exit_code")
    if code == 0:
        return RuntimeState(SUCCEEDED, exit_code=0)
    return RuntimeState(FAILED, exit_code=code, error=error_summary("", code))


def _this_worker() -> dict[str, Any]:
    """Who holds a launch claim: this process, so a reconciler on the same machine can tell it died."""
    from apps.jobs.launchers.local import _proc_stat

    st = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": st[2] if st else None}


def _claimer_gone(handle: dict[str, Any]) -> bool:
    """The worker that claimed this launch ran on this machine and is dead (killed mid-launch)."""
    from apps.jobs.launchers.local import is_alive

    worker = handle.get("worker") or {}
    if worker.get("host") != socket.gethostname() or not isinstance(worker.get("pid"), int):
        return False  # another machine's worker: only the LAUNCH_STALE_S timer can judge it
    return not is_alive(worker["pid"], worker.get("start_ticks"))


def _recover_launch(job: Job, claim: dict[str, Any]) -> str:
    """The worker died mid-launch: adopt the runtime it started, or release the claim and launch again."""
    from apps.jobs.services import lock_job, set_job_status

    try:
        launcher = get_launcher(claim.get("backend") or job.launcher or None)
        adopted = launcher.adopt(str(job.id), job.role)
    except LaunchError as exc:
        log.warning("cannot recover the launch of job %s: %s", job.pk, exc)
        return "launching"
    with transaction.atomic():
        locked = lock_job(job)  # ticket, then job: the order every path takes
        if locked.status != J.PENDING or locked.handle != claim:
            return "raced"
        locked.handle = adopted or {}
        locked.save(update_fields=["handle", "updated_at"])
        if adopted:
            set_job_status(locked, J.STARTING, source="launcher")
    if adopted:
        log.info("job %s: adopted the runtime a lost worker started", job.pk)
        return "adopted"
    from workers.tasks import launch_job

    launch_job.delay(job_id=str(job.id))
    return "relaunched"


def reconcile_job(job: Job, now: float | None = None) -> str:
    """Compare one active job with its runtime; move it if the runtime is done or gone."""
    from apps.jobs.services import set_job_status

    now = now or time.time()
    handle = job.handle or {}
    if job.status == J.PENDING:
        if handle.get("state") == "launching":
            if _claimer_gone(handle):
                return _recover_launch(job, handle)
            if now - float(handle.get("since", now)) > LAUNCH_STALE_S:
                set_job_status(job, J.FAILED, error="the launch was interrupted (worker lost)", source="launcher")
                return "failed"
            return "launching"
        if not handle:
            waited = (timezone.now() - job.created_at).total_seconds()
            if job.role == PartyRole.FOLLOWER and not job.runtime_address:
                limit = float(_setting("FEDSITE_LEADER_WAIT_S", 3600))
                if waited > limit:
                    set_job_status(
                        job,
                        J.FAILED,
                        error=f"the partner's runtime did not start within {limit:g} s",
                        source="launcher",
                    )
                    return "failed"
                return "waiting"
            if waited > RELAUNCH_AFTER_S:
                from workers.tasks import launch_job

                launch_job.delay(job_id=str(job.id))
                return "relaunched"
        return "pending"
    if not handle or handle.get("state") in ("launching", "not-started"):
        return "no-handle"
    if handle.get("state") == "finished":
        # The runtime ended but the job did not move (written by an older worker, which
        # committed the two apart): end it now, with the result the runtime left.
        try:
            launcher: Launcher | None = get_launcher(handle.get("backend") or job.launcher or None)
        except LaunchError:
            launcher = None
        state = _finished_state(launcher, handle)
        return state.state if _finish(job, state, launcher) else "raced"
    try:
        launcher = get_launcher(handle.get("backend") or job.launcher or None)
        state = launcher.poll(handle)
    except LaunchError as exc:
        log.warning("cannot look at job %s: %s", job.pk, exc)
        return "unknown"
    if not state.finished:
        return "running"
    return state.state if _finish(job, state, launcher) else "raced"


def reconcile() -> int:
    """Beat: look at every active job of this installation; returns how many moved."""
    moved = 0
    for job in Job.objects.filter(status__in=ACTIVE).select_related("ticket", "workspace").order_by("created_at"):
        try:
            outcome = reconcile_job(job)
        except Exception:  # noqa: BLE001 - one broken job must not stop the others
            log.exception("reconciling job %s", job.pk)
            continue
        if outcome in (SUCCEEDED, FAILED, "missing"):
            moved += 1
    return moved
