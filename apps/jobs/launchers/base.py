"""The launcher interface the job service talks to."""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
MISSING = "missing"

# What the runtime writes into its output folder as each step ends (runtime/report.py writes it):
# {"<step>": {…the step's result…}}. The reconciler reads it when the reports did not arrive.
RESULT_FILE = "result.json"

# A line of a runtime's log that says what went wrong ("error: tls: required", "ERROR ...").
_ERROR_LINE = re.compile(r"\berror\b|Traceback|Exception", re.IGNORECASE)
# A logging record's prefix ("2026-11-25 06:40:00,123 ERROR fedsite.runtime: "), or a pod log's
# RFC 3339 timestamp: the summary shows only the message.
_LOG_PREFIX = re.compile(
    r"^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+)?"
    r"(?:\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+(?:CRITICAL|ERROR|WARNING|INFO|DEBUG)\s+[\w.]+:\s+)?"
)


class LaunchError(Exception):
    """The runtime could not be started; the job fails with this message."""


class TransientLaunchError(LaunchError):
    """The backend is unreachable or overloaded for now: the launch task retries before failing the job."""


@dataclass
class RuntimeSpec:
    """Everything a backend needs to start one side's runtime.

    `config` is the runtime config without `tls` and `output_dir`: those depend on
    where the runtime runs, so the backend fills them in.
    """

    job_id: str
    side: str
    config: dict[str, Any]
    tls_files: dict[str, str] | None = None
    port: int | None = None
    # Consecutive ports from `port` the runtime listens on (a stream_join_train leader: join, then training).
    port_count: int = 1
    # 0: no deadline (long-running kinds run until a person stops them).
    timeout_s: int = 24 * 3600
    # A service (apps.tickets.choices.SERVICE_KINDS: serving): runs until stopped and is restarted if it
    # dies; Kubernetes runs it as a Deployment plus a Service rather than a run-to-completion Job.
    keep_running: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    # Partitioned PSI (psi.partitions > 1): how many runtimes this side runs, one per partition,
    # and the earlier attempts of the ticket whose completed partitions may be reused.
    partitions: int = 1
    previous_job_ids: list[str] = field(default_factory=list)


@dataclass
class RuntimeState:
    """What a backend saw of a runtime: still running, finished (and how), or gone."""

    state: str
    exit_code: int | None = None
    error: str = ""
    log_tail: str = ""

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


def error_summary(log_tail: str, exit_code: int | None = None) -> str:
    """The last line of the log that names an error, else a line naming the exit code."""
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.search(line) and not line.startswith("Traceback"):
            return (_LOG_PREFIX.sub("", line, count=1) or line)[:2000]
    if exit_code is None:
        return "the runtime stopped without an exit status"
    if exit_code < 0:
        return f"the runtime was killed by signal {-exit_code}"
    return f"the runtime exited with code {exit_code}"


def read_result_file(path: Path) -> dict[str, Any]:
    """A runtime's result file: {} if it is not there; ValueError if it is not a JSON object, or if it leads
    (through a symlink) outside the runtime's own folder, e.g. to another job's result."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return {}
    except RuntimeError:  # a symlink loop
        raise ValueError(f"{path}: a symlink loop") from None
    if path.parent.is_symlink():
        raise ValueError(f"{path.parent} is a symlink (to {path.parent.resolve()}): its result is not read")
    folder = path.parent.resolve()
    if not real.is_relative_to(folder) or not real.is_file():
        raise ValueError(f"{path} leads outside its job's folder (to {real}): not read")
    try:
        data = json.loads(real.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


class Launcher(abc.ABC):
    """Starts, watches and stops one side's runtime. Handles are JSON dicts stored on the job."""

    name: str = ""

    @abc.abstractmethod
    def runtime_host(self, job_id: str, side: str, port: int) -> str:
        """The address (host:port) the partner's runtime dials to reach this leader runtime."""

    def listen_address(self, port: int) -> str:
        return f"0.0.0.0:{port}"

    def serving_api_address(self, job_id: str, side: str, port: int | None) -> tuple[str, str]:
        """(bind, advertise): where a leader's serving runtime listens for its own web process, and the address
        that web process dials ("" : the bound one, which the runtime reports; port 0: it picks a free one)."""
        return "127.0.0.1:0", ""

    @abc.abstractmethod
    def start(self, spec: RuntimeSpec) -> dict[str, Any]:
        """Start the runtime; return the handle to store on the job."""

    @abc.abstractmethod
    def poll(self, handle: dict[str, Any]) -> RuntimeState:
        """Look at a started runtime."""

    @abc.abstractmethod
    def stop(self, handle: dict[str, Any]) -> None:
        """Stop the runtime (and clean up what the backend created); idempotent."""

    @abc.abstractmethod
    def log_tail(self, handle: dict[str, Any], lines: int = 50) -> str:
        """The last lines of the runtime's own output."""

    def adopt(self, job_id: str, side: str) -> dict[str, Any] | None:
        """The handle of a runtime started for this job side by a worker that died before storing it."""
        return None

    def read_result(self, handle: dict[str, Any]) -> dict[str, Any]:
        """The step results the runtime left in its output folder ({} where this backend cannot see it)."""
        return {}

    # Partitioned PSI: "offset" = partition i of a side listens on the job's port + i (one
    # machine); "same" = every partition on the job's port, in its own pod (Kubernetes).
    partition_ports: str = "offset"

    def partition_host(self, job_id: str, side: str, port: int) -> str:
        """The leader's address for partitioned PSI; ``{partition}`` in it is replaced by the index."""
        return self.runtime_host(job_id, side, port)

    def used_ports(self) -> set[int]:
        """Ports in use outside the database's knowledge (e.g. bound by other programs)."""
        return set()
