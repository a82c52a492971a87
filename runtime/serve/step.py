"""The ``serve`` command: one side's long-running serving runtime (``python -m runtime serve``).

Params in the config's ``serve`` block: ``model_dir`` (this side's half, required),
``data_path`` (default: the dataset), ``api_address`` (leader: where its web
process calls ``ServingApi``; default ``127.0.0.1:0``, the port chosen is reported),
``api_token`` (leader: the bearer token that call presents), ``deadline_ms`` (200),
``max_ids`` (10000), ``report_every_s`` (10), ``retry_max_s`` (2), ``tf_threads`` (1).

It builds the indexed feature store, starts serving and reports
``result.serve = {"api_address", "rows", "family"}`` (the job shows as running);
every ``report_every_s`` it reports the metrics ``predictions`` (this hour's count;
``step`` and ``epoch`` = hours since 1970, so the partner receives them when the
ticket shares metrics), ``requests`` and ``latency_p50_ms`` / ``latency_p99_ms``,
and writes the per-hour audit to ``<output_dir>/serve/audit.json``. It runs until
stopped (SIGTERM or SIGINT: exit 0), or until a config error it cannot outlive.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import JobConfig
from runtime.report import Reporter
from runtime.serve.model import load_half
from runtime.serve.server import FollowerServing, LeaderServing, build_store, parse_serve_params
from runtime.serve.stats import Stats

STAGE = "serve"


@dataclass
class Serving:
    """A started serving runtime (leader or follower) and its counters."""

    side: LeaderServing | FollowerServing
    stats: Stats
    info: dict[str, Any]

    def stop(self) -> None:
        self.side.stop()


def start(cfg: JobConfig, reporter: Reporter) -> Serving:
    """Load the half, build the store, start serving; returns at once."""
    params = parse_serve_params(cfg)
    half = load_half(params.model_dir, cfg.role, tf_threads=params.tf_threads)
    reporter.log(f"serve: indexing {params.data_path}")
    t0 = time.perf_counter()
    store = build_store(cfg, params, half)
    reporter.log(f"serve: {store.rows} rows indexed in {time.perf_counter() - t0:.1f} s ({store.path.name})")
    stats = Stats()
    side: LeaderServing | FollowerServing
    info: dict[str, Any] = {"role": cfg.role, "rows": store.rows, "family": half.family, "model_dir": params.model_dir}
    if cfg.is_leader:
        side = LeaderServing(cfg, params, half, store, stats)
        info["api_address"] = side.api_address
    else:
        side = FollowerServing(cfg, params, half, store, stats)
    side.start()
    return Serving(side, stats, info)


def report_stats(reporter: Reporter, stats: Stats, output_dir: str, last: dict[str, Any]) -> dict[str, Any]:
    """Metrics of the current hour, and the audit file; returns the snapshot sent."""
    snap = stats.snapshot()
    if snap["version"] == last.get("version"):
        return last
    hour = int(time.time() // 3600)
    this_hour = snap["predictions_per_hour"].get(time.strftime("%Y-%m-%dT%H", time.gmtime(hour * 3600)), 0)
    reporter.metric("predictions", this_hour, step=hour, epoch=hour, split=STAGE)
    reporter.metric("requests", snap["requests"], step=hour, epoch=hour, split=STAGE)
    reporter.metric("latency_p50_ms", snap["p50_ms"], step=hour, epoch=hour, split=STAGE)
    reporter.metric("latency_p99_ms", snap["p99_ms"], step=hour, epoch=hour, split=STAGE)
    audit = Path(output_dir) / "serve" / "audit.json"
    tmp = audit.with_name(".audit.json.tmp")
    tmp.write_text(json.dumps({"predictions_per_hour": snap["predictions_per_hour"], "requests": snap["requests"]}))
    tmp.replace(audit)
    return snap


def run(cfg: JobConfig, reporter: Reporter, stop: threading.Event | None = None) -> dict[str, Any]:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    serving = start(cfg, reporter)
    reporter.result(STAGE, serving.info)
    reporter.progress(1.0, STAGE)
    params = parse_serve_params(cfg)
    last: dict[str, Any] = {}
    try:
        while not stop.wait(params.report_every_s):
            last = report_stats(reporter, serving.stats, cfg.output_dir, last)
            fatal = getattr(serving.side, "fatal", None)
            if fatal is not None:
                raise fatal
    finally:
        serving.stop()
        report_stats(reporter, serving.stats, cfg.output_dir, last)
    reporter.log("serve: stopped")
    return {**serving.info, "predictions": serving.stats.predictions, "requests": serving.stats.requests}
