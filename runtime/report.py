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

Without a report URL (a run from the shell) events go to stderr, and progress is
drawn as a bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from runtime.config import ReportConfig
from runtime.errors import ConfigError

log = logging.getLogger("fedsite.runtime")


class Reporter:
    """Collects job events and ships them to the installation in the background."""

    def __init__(self, report: ReportConfig | None, flush_interval_s: float = 0.5) -> None:
        if report is not None and not report.url.startswith(("http://", "https://")):
            raise ConfigError(f"report.url: must be an http(s) URL, got {report.url!r}")
        self._report = report
        self._interval = flush_interval_s
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._last_progress: dict[str, float] = {}
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if report is not None:
            self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
            self._thread.start()

    # -- public API -------------------------------------------------------
    def progress(self, value: float, stage: str) -> None:
        """Overall progress of a stage in [0, 1]; rate-limited to 1% steps."""
        value = max(0.0, min(1.0, float(value)))
        last = self._last_progress.get(stage, -1.0)
        if value < 1.0 and value - last < 0.01:
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
        self._emit({"type": "result", "stage": stage, "data": data})

    def failed(self, error: str) -> None:
        """The job cannot go on: log the message and tell the installation at once.

        The installation fails the job on this event (it does not wait for its
        reconciler to see the process exit), so a runtime's own reason reaches the
        job before any failure the partner reports as a consequence of it.
        """
        self.log(error, "error")
        self._emit({"type": "failed", "error": error})

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered and stop the background thread."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
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

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._flush()
            if self._closed:
                self._flush()
                return

    def _flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch or self._report is None:
            return
        body = json.dumps({"events": batch}).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._report.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._report.token}"},
        )
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http(s) only
                    resp.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if attempt == 2:
                    log.warning("could not report %d events to the installation: %s", len(batch), exc)
                else:
                    time.sleep(0.2 * (attempt + 1))
