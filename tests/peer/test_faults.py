"""A handful of fault-benchmark trials (bench/faults.py), races included, with one process kill: nothing lost or diverged.

Two fresh installations of their own (PostgreSQL databases created and dropped
here, queues named for this run on the test Redis server); the benchmark's own
code drives them and judges the two databases at quiescence.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from tests.peer.conftest import PG, REDIS

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_faults", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_trials_across_a_process_kill_lose_duplicate_and_diverge_nothing() -> None:
    faults = load_bench()
    broker_db = urlsplit(os.environ.get("FEDSITE_TEST_BROKER_URL", "")).path.strip("/") or "0"
    args = faults.options(
        [],
        trials=12,
        concurrency=4,
        outages=[],
        kills=0,
        worker_kills=0,
        settle=90.0,
        quiet=4.0,
        max_process_kills=1,
        trials_per_kill=2,
        chaos_gap=0.05,
        chaos_outage_max=2.0,
        scenarios={name: 1 for name in faults.SCENARIOS},  # the races (decision × withdrawal) included
        pg=PG,
        redis=f"{REDIS}/{broker_db}",
        db_prefix=f"fedsite_test_faults_{os.getpid()}",
        database="postgresql",
        broker="redis",
        no_progress=True,
        seed=5,
    )

    result = faults.run(args)

    details = result["details"]
    assert result["process_kills"] == 1, details["kills"]
    assert result["tickets"] == 12
    assert result["lost"] == 0, details["lost"]
    assert result["duplicated"] == 0, details["duplicated"]
    assert result["diverged"] == 0, details["diverged"]
    assert result["jobs_diverged"] == 0, details["jobs_diverged"]
    assert result["stuck"] == 0, details["stuck_trials"]
    assert result["server_errors"] == 0, details["server_errors"]
    assert details["pending_messages_at_end"] == 0
