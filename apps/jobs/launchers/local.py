"""Local backend: the runtime as a process group on this machine, logs and exit codes under var/jobs.

Layout per job and side (`side` is this installation's role)::

    <FEDSITE_JOBS_DIR>/<job uuid>/<side>.json   the runtime config (0600: it holds the job token)
    <FEDSITE_JOBS_DIR>/<job uuid>/<side>.log    stdout + stderr of the runtime
    <FEDSITE_JOBS_DIR>/<job uuid>/<side>.exit   {"code": …} written by the supervisor when it ends
    <FEDSITE_JOBS_DIR>/<job uuid>/<side>/       the runtime's output_dir (result.json: its step results)

The process tree is `supervise` (session and group leader, pid in the handle) →
`python -m runtime run --config <side>.json`. Cancel kills the group; the exit
file lets a reconciler judge runs that ended while no worker was watching.
All workers of an installation using this backend run on one machine (the
handle records it; another machine's worker refuses to judge or stop the run).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.jobs.launchers.base import (
    FAILED,
    MISSING,
    RESULT_FILE,
    RUNNING,
    SUCCEEDED,
    Launcher,
    LaunchError,
    RuntimeSpec,
    RuntimeState,
    error_summary,
    read_result_file,
)
from apps.jobs.launchers.supervise import write_exit

log = logging.getLogger(__name__)

# Environment the runtime inherits: nothing of the web app's secrets (database URL,
# SECRET_KEY, broker credentials) — only what a Python program needs to run.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE")
_ENV_PREFIXES = ("FEDSITE_RUNTIME_", "TF_", "OMP_", "CUDA_")

# Popen objects of runtimes this worker started, so finished ones are reaped (no zombies).
_children: dict[int, subprocess.Popen] = {}


def runtime_command() -> list[str]:
    """argv prefix that runs the runtime CLI (`FEDSITE_RUNTIME_COMMAND` overrides it, e.g. in tests)."""
    cmd = getattr(settings, "FEDSITE_RUNTIME_COMMAND", None)
    if not cmd:
        return [sys.executable, "-m", "runtime"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start time in clock ticks) of a process, from /proc; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def is_alive(pid: int, start_ticks: int | None) -> bool:
    """True while the process `pid` runs and is the one we started (not a reused pid)."""
    _reap(pid)
    if Path("/proc/self/stat").exists():
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            return False
        return start_ticks is None or st[2] == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int, marker: str) -> list[int]:
    """Pids in process group `pgid` whose command line mentions `marker` (our config path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is None or st[1] != pgid or st[0] in ("Z", "X"):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, jobs_dir: Path | str | None = None, on_exit: Callable[[], None] | None = None) -> None:
        self.jobs_dir = Path(jobs_dir or settings.FEDSITE_JOBS_DIR)
        # Called (from a thread of this worker) when a runtime it started ends, so the job
        # moves at once instead of at the next beat reconcile.
        self.on_exit = on_exit

    @staticmethod
    def _wait(proc: subprocess.Popen, callback: Callable[[], None]) -> None:
        proc.wait()
        _children.pop(proc.pid, None)
        try:
            callback()
        except Exception:  # noqa: BLE001 - the beat reconcile catches up anyway
            log.exception("after runtime %s ended", proc.pid)

    # -- addresses ---------------------------------------------------------
    def runtime_host(self, job_id: str, side: str, port: int) -> str:
        return f"{settings.FEDSITE_RUNTIME_HOST}:{port}"

    def bind_host(self) -> str:
        bind = getattr(settings, "FEDSITE_RUNTIME_BIND", "")
        if bind:
            return bind
        try:
            ipaddress.ip_address(settings.FEDSITE_RUNTIME_HOST)
        except ValueError:
            return "0.0.0.0"
        return settings.FEDSITE_RUNTIME_HOST

    def listen_address(self, port: int) -> str:
        return f"{self.bind_host()}:{port}"

    def port_available(self, port: int) -> bool:
        return port_is_free(self.bind_host(), port)

    # -- lifecycle ---------------------------------------------------------
    def paths(self, job_id: str, side: str) -> dict[str, Path]:
        base = self.jobs_dir / job_id
        return {
            "dir": base,
            "config": base / f"{side}.json",
            "log": base / f"{side}.log",
            "exit": base / f"{side}.exit",
            "pid": base / f"{side}.pid",
            "output": base / side,
        }

    def start(self, spec: RuntimeSpec) -> dict[str, Any]:
        if spec.partitions > 1:
            return self._start_partitions(spec)
        p = self.paths(spec.job_id, spec.side)
        return self._start_process(spec, p, {**spec.config, "output_dir": str(p["output"]), "tls": spec.tls_files})

    def _start_process(self, spec: RuntimeSpec, p: dict[str, Path], config: dict[str, Any]) -> dict[str, Any]:
        p["output"].mkdir(parents=True, exist_ok=True)
        p["exit"].unlink(missing_ok=True)
        fd = os.open(p["config"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
        argv = [
            sys.executable,
            "-m",
            "apps.jobs.launchers.supervise",
            "--exit-file",
            str(p["exit"]),
            "--deadline",
            str(spec.timeout_s),
            "--nice",
            str(settings.FEDSITE_LOCAL_RUNTIME_NICE),
            "--",
            *runtime_command(),
            "run",
            "--config",
            str(p["config"]),
        ]
        base_dir = str(settings.BASE_DIR)
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith(_ENV_PREFIXES)}
        env["PYTHONPATH"] = os.pathsep.join([base_dir, *filter(None, [os.environ.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        with p["log"].open("ab") as logfh:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logfh,
                    stderr=subprocess.STDOUT,
                    cwd=base_dir,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise LaunchError(f"cannot start the runtime: {exc}") from exc
        _children[proc.pid] = proc
        st = _proc_stat(proc.pid)
        if self.on_exit is not None:
            threading.Thread(
                target=self._wait, args=(proc, self.on_exit), name=f"runtime-{proc.pid}", daemon=True
            ).start()
        handle = {
            "backend": self.name,
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_ticks": st[2] if st else None,
            "config": str(p["config"]),
            "log": str(p["log"]),
            "exit_file": str(p["exit"]),
            "output_dir": str(p["output"]),
            "port": spec.port,
            "port_count": spec.port_count,
            "host": socket.gethostname(),
            "started": time.time(),
        }
        # With the whole handle: a worker killed before it stored the handle leaves it here (adopt()).
        p["pid"].write_text(json.dumps({"pid": proc.pid, "start_ticks": handle["start_ticks"], "handle": handle}))
        return handle

    # -- partitioned PSI: P runtime processes for this side, one per partition ------------
    def partition_paths(self, job_id: str, side: str, index: int) -> dict[str, Path]:
        """Partition i's config, log, exit and pid files; the output folder is the side's (shared)."""
        p = self.paths(job_id, side)
        tag = f"{side}.p{index}"
        return {
            **p,
            "config": p["dir"] / f"{tag}.json",
            "log": p["dir"] / f"{tag}.log",
            "exit": p["dir"] / f"{tag}.exit",
            "pid": p["dir"] / f"{tag}.pid",
        }

    def _start_partitions(self, spec: RuntimeSpec) -> dict[str, Any]:
        """Partition i listens on (leader) or dials (follower) the job's port + i (runtime/psi/partition.py)."""
        p = self.paths(spec.job_id, spec.side)
        reuse = [str(self.paths(prev, spec.side)["output"]) for prev in spec.previous_job_ids]
        parts: list[dict[str, Any]] = []
        try:
            for i in range(spec.partitions):
                psi = dict(spec.config.get("psi") or {})
                psi["partition"] = {**(psi.get("partition") or {}), "index": i, "ports": "offset", "reuse_from": reuse}
                config = {**spec.config, "psi": psi, "output_dir": str(p["output"]), "tls": spec.tls_files}
                parts.append(self._start_process(spec, self.partition_paths(spec.job_id, spec.side, i), config))
        except LaunchError:
            for started in parts:
                self.stop(started, grace_s=0)
            raise
        handle = {**parts[0], "partitions": parts, "port_count": spec.partitions}
        p["pid"].write_text(
            json.dumps({"pid": parts[0]["pid"], "start_ticks": parts[0]["start_ticks"], "handle": handle})
        )
        return handle

    def adopt(self, job_id: str, side: str) -> dict[str, Any] | None:
        try:
            info = json.loads(self.paths(job_id, side)["pid"].read_text())
        except (OSError, ValueError):
            return None
        handle = info.get("handle") if isinstance(info, dict) else None
        if not isinstance(handle, dict) or handle.get("host") != socket.gethostname():
            return None
        return handle

    def _read_exit(self, handle: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return json.loads(Path(handle["exit_file"]).read_text())
        except (FileNotFoundError, KeyError, ValueError):
            return None

    def _check_host(self, handle: dict[str, Any]) -> None:
        host = handle.get("host")
        if host and host != socket.gethostname():
            # Pids mean nothing on another machine: never judge (or kill) a runtime from here.
            raise LaunchError(f"the runtime runs on {host}, not on {socket.gethostname()}")

    def poll(self, handle: dict[str, Any]) -> RuntimeState:
        if handle.get("partitions"):
            return self._poll_partitions(handle["partitions"])
        if not handle.get("pid"):
            return RuntimeState(MISSING, error="the runtime was never started")
        self._check_host(handle)
        done = self._read_exit(handle)
        if done is None and is_alive(handle["pid"], handle.get("start_ticks")):
            return RuntimeState(RUNNING)
        done = done or self._read_exit(handle)
        tail = self.log_tail(handle)
        if done is None:
            line = error_summary(tail, None)
            return RuntimeState(
                MISSING,
                error="the runtime process disappeared without an exit status"
                + (f" (last error: {line})" if "error" in line.lower() else ""),
                log_tail=tail,
            )
        code = int(done.get("code", 1))
        if code == 0:
            return RuntimeState(SUCCEEDED, exit_code=0, log_tail=tail)
        return RuntimeState(
            FAILED, exit_code=code, error=done.get("reason") or error_summary(tail, code), log_tail=tail
        )

    def _poll_partitions(self, parts: list[dict[str, Any]]) -> RuntimeState:
        """All partitions succeeded: succeeded; one failed or vanished: the job fails, naming it."""
        states = [self.poll(part) for part in parts]
        for i, st in enumerate(states):
            if st.state in (FAILED, MISSING):
                error = st.error if f"partition {i} " in st.error else f"partition {i} of {len(parts)}: {st.error}"
                return RuntimeState(st.state, exit_code=st.exit_code, error=error, log_tail=st.log_tail)
        if all(st.state == SUCCEEDED for st in states):
            return RuntimeState(SUCCEEDED, exit_code=0, log_tail=states[-1].log_tail)
        return RuntimeState(RUNNING)

    def stop(self, handle: dict[str, Any], grace_s: float | None = None) -> None:
        if handle.get("partitions"):
            for part in handle["partitions"]:
                self.stop(part, grace_s)
            return
        pid = handle.get("pid")
        if not pid:
            return
        self._check_host(handle)
        grace = float(getattr(settings, "FEDSITE_LOCAL_STOP_GRACE_S", 5.0) if grace_s is None else grace_s)
        pgid = handle.get("pgid", pid)
        leader_alive = is_alive(pid, handle.get("start_ticks"))
        if not leader_alive and not _group_members(pgid, handle.get("config", str(pid))):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return  # gone already, by its own exit: the supervisor recorded it
            deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
            while time.monotonic() < deadline:
                if not is_alive(pid, handle.get("start_ticks")) and not _group_members(pgid, handle.get("config", "")):
                    self._record_stop(handle, sig)
                    return
                time.sleep(0.05)
        log.warning("runtime group %s still has members after SIGKILL", pgid)
        self._record_stop(handle, signal.SIGKILL)

    def _record_stop(self, handle: dict[str, Any], sig: int) -> None:
        """The supervisor records the exit; if it died first (killed, or stopped during its own
        start), record it here so the job's folder still says how its runtime ended."""
        exit_file = handle.get("exit_file")
        if exit_file and not Path(exit_file).exists():
            write_exit(exit_file, -int(sig), "stopped by the launcher")

    def read_result(self, handle: dict[str, Any]) -> dict[str, Any]:
        output = handle.get("output_dir")
        if not output:
            return {}
        self._check_host(handle)
        return read_result_file(Path(output) / RESULT_FILE)

    def log_tail(self, handle: dict[str, Any], lines: int = 50) -> str:
        if handle.get("partitions"):
            per = max(5, lines // len(handle["partitions"]))
            return "\n".join(self.log_tail(part, per) for part in handle["partitions"])
        return _tail(Path(handle["log"]), lines) if handle.get("log") else ""


def kill_all(jobs_dir: Path | str) -> int:
    """Kill every runtime still running under `jobs_dir` (for tearing down a test installation).

    Reads the pid files the launcher writes, so it needs no database. Returns how many groups it killed.
    """
    killed = 0
    for pid_file in Path(jobs_dir).glob("*/*.pid"):
        try:
            info = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        handle = info.get("handle") if isinstance(info.get("handle"), dict) else {}
        for proc in handle.get("partitions") or [info]:  # a partitioned PSI side: every partition's group
            if is_alive(proc["pid"], proc.get("start_ticks")):
                try:
                    os.killpg(proc["pid"], signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
    return killed
