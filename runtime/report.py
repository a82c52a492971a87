"""Progress, metrics and log lines from the runtime to its own installation.

Events are buffered and POSTed as JSON to ``report.url`` with the per-job token
(``Authorization: Bearer <token>``) from a background thread, so a slow web
server never stalls PSI or training. The wire format::

    {"events": [
      {"type": "progress", "value": 0.42, "stage": "psi"},
      {"type": "metric", "name": "auc", "value": 0.81, "step": 120, "epoch": 2, "split": "validation"},
      {"type": "log", "line": "intersection: 41234 ids", "level": "info"},
      {"type": "result", "stage": "psi", "data": {"intersection_size": 41234}}
    ]}

Reports are durable: a batch the installation did not take (web down, restarting,
overloaded) goes back to the front of the queue and is retried with backoff for as
long as the job may run (its ``timeout_s``), in order; when the work is done the
runtime keeps trying for ``report.final_flush_s`` more before it exits. Only an
answer that says the report will never be accepted (a 4xx other than 408/429: a
revoked token, a job that is gone) drops a batch. Each step's result is also
written to ``<output_dir>/result.json`` the moment it is known, where the
installation's reconciler reads it if the reports never arrived.

Without a report URL (a run from the shell) events go to stderr, and progress is
drawn as a bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from runtime.config import ReportConfig
from runtime.errors import ConfigError

log = logging.getLogger("fedsite.runtime")

# The step results file in the output folder (the launchers read the same name).
RESULT_FILE = "result.json"
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 10.0
MAX_BATCH = 1000  # events per POST
MAX_QUEUED = 50_000  # beyond this, during a long outage, the oldest progress and log events go first
_DROPPABLE = ("progress", "log")


class ReportRejected(Exception):
    """The installation answered that this report will never be accepted: do not retry it."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected report is an error, never followed: urllib would re-send a POST as a body-less GET."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise ReportRejected(
            f"HTTP {code}: {req.full_url} redirects to {newurl}; reports are never sent on across a redirect "
            "(the report URL must be answered directly: FEDSITE_RUNTIME_REPORT_URL)"
        )


_opener = urllib.request.build_opener(_RefuseRedirects)


class Reporter:
    """Collects job events and ships them to the installation in the background."""

    def __init__(
        self,
        report: ReportConfig | None,
        flush_interval_s: float = 0.5,
        *,
        output_dir: str | Path | None = None,
        retry_for_s: float = 24 * 3600.0,
    ) -> None:
        if report is not None and not report.url.startswith(("http://", "https://")):
            raise ConfigError(f"report.url: must be an http(s) URL, got {report.url!r}")
        self._report = report
        self._interval = flush_interval_s
        self._result_file = Path(output_dir) / RESULT_FILE if output_dir else None
        self._results: dict[str, Any] = {}
        if self._result_file is not None:
            self._result_file.unlink(missing_ok=True)  # a stale file of an earlier run must not count
        # Undelivered reports are retried until then (the job cannot run longer than this).
        self._retry_until = time.monotonic() + retry_for_s
        self._final_deadline: float | None = None
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.rejected = ""  # why the installation last refused a report (empty: never)
        self._last_progress: dict[str, float] = {}
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if report is not None:
            self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
            self._thread.start()

    # -- public API -------------------------------------------------------
    def progress(self, value: float, stage: str, *, force: bool = False) -> None:
        """Overall progress of a stage in [0, 1]; rate-limited to 1% steps unless `force` (a stage change)."""
        value = max(0.0, min(1.0, float(value)))
        last = self._last_progress.get(stage, -1.0)
        if not force and value < 1.0 and value - last < 0.01:
            return
        self._last_progress[stage] = value
        self._emit({"type": "progress", "value": round(value, 4), "stage": stage})
        if self._report is None:
            self._draw_bar(value, stage)

    def metric(
        self, name: str, value: float, *, step: int | None = None, epoch: int | None = None, split: str = "train"
    ) -> None:
        self._emit(
            {"type": "metric", "name": name, "value": float(value), "step": step, "epoch": epoch, "split": split}
        )

    def log(self, line: str, level: str = "info") -> None:
        getattr(log, level if level in ("info", "warning", "error") else "info")(line)
        self._emit({"type": "log", "line": line, "level": level})

    def result(self, stage: str, data: dict[str, Any]) -> None:
        """A step's result: to the installation, and into ``result.json`` of the output folder at once."""
        self._results[stage] = data
        if self._result_file is not None:
            self._write_results()
        self._emit({"type": "result", "stage": stage, "data": data})

    def failed(self, error: str) -> None:
        """The job cannot go on: log the message and tell the installation at once.

        The installation fails the job on this event (it does not wait for its
        reconciler to see the process exit), so a runtime's own reason reaches the
        job before any failure the partner reports as a consequence of it.
        """
        self.log(error, "error")
        self._emit({"type": "failed", "error": error})

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is buffered (retrying up to `timeout_s`, default ``report.final_flush_s``) and stop."""
        if timeout_s is None:
            timeout_s = self._report.final_flush_s if self._report is not None else 0.0
        self._final_deadline = time.monotonic() + timeout_s
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s + 15.0)  # one POST may still be in flight at the deadline
        if self._bar is not None:
            self._bar.close()

    # -- internals --------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        event["ts"] = time.time()
        if self._report is None:
            if event["type"] != "progress":
                print(json.dumps(event), file=sys.stderr)
            return
        with self._lock:
            self._buffer.append(event)

    def _draw_bar(self, value: float, stage: str) -> None:
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if self._bar is None or self._bar.desc != stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=100, desc=stage, unit="%", file=sys.stderr)
        self._bar.n = int(value * 100)
        self._bar.refresh()

    def _write_results(self) -> None:
        assert self._result_file is not None
        path = self._result_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._results, fh, indent=2, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if not self._closed:
                self._wake.wait(backoff or self._interval)
                self._wake.clear()
            elif backoff:
                assert self._final_deadline is not None
                time.sleep(max(0.0, min(backoff, self._final_deadline - time.monotonic())))
            delivered = self._flush()
            backoff = 0.0 if delivered else min(RETRY_MAX_S, max(RETRY_FIRST_S, backoff * 2))
            if not delivered and time.monotonic() > self._retry_until:
                self._give_up("the job's time is up")
                backoff = 0.0
            if self._closed:
                with self._lock:
                    empty = not self._buffer
                if empty:
                    return
                assert self._final_deadline is not None
                if time.monotonic() >= self._final_deadline:
                    self._give_up("the runtime is exiting; its result is in its output folder")
                    return

    def _give_up(self, why: str) -> None:
        with self._lock:
            dropped, self._buffer = self._buffer, []
        if dropped:
            log.warning("could not report %d events to the installation (%s)", len(dropped), why)

    def _flush(self) -> bool:
        """Send the oldest queued events; False if they must be tried again later."""
        with self._lock:
            batch, self._buffer = self._buffer[:MAX_BATCH], self._buffer[MAX_BATCH:]
        if not batch or self._report is None:
            return True
        try:
            self._post(batch)
        except ReportRejected as exc:
            log.error("the installation refused %d events: %s", len(batch), exc)
            self.rejected = str(exc)
            return True
        except (urllib.error.URLError, OSError) as exc:
            with self._lock:
                self._buffer[:0] = batch  # first again: order is kept
                self._trim()
            log.info("report of %d events not delivered, will retry: %s", len(batch), exc)
            return False
        return True

    def _trim(self) -> None:
        """Keep the queue bounded in a long outage: drop the oldest progress and log events first."""
        excess = len(self._buffer) - MAX_QUEUED
        if excess <= 0:
            return
        kept: list[dict[str, Any]] = []
        for event in self._buffer:
            if excess > 0 and event.get("type") in _DROPPABLE:
                excess -= 1
                continue
            kept.append(event)
        self._buffer = kept

    def _post(self, batch: list[dict[str, Any]]) -> None:
        """POST one batch; ReportRejected if it will never be taken, URLError/OSError if it may be later."""
        assert self._report is not None
        body = json.dumps({"events": batch}).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._report.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._report.token}"},
        )
        try:
            with _opener.open(req, timeout=10) as resp:  # http(s) only, checked in __init__
                resp.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise ReportRejected(f"HTTP {exc.code} {exc.reason}") from exc
            raise
