"""Stream-join benchmark: a leader and a follower runtime on this machine, mutual TLS on loopback.

    .venv/bin/python bench/stream_join.py            # 1M events per side, 20 s at 10k events/s
    .venv/bin/python bench/stream_join.py --quick    # 100k events per side, 8 s at 10k events/s

Throughput: each side's folder source holds N events already landed (70 % shared
ids, follower times within max_delay of the leader's, delivery shuffled within the
lateness); both runtimes run (as threads of this process, so they share one
interpreter lock: a pessimistic set-up) until both sources are idle; joined events
per second per side = N / wall time. The baseline, measured in the same run, is a
pandas batch join of the same events (no network, no durability).

Lag: a generator lands part files on both sides at 10k events/s per side (event
time = wall time when generated); every 100 ms the lag is now minus the newest
event time in the leader's committed blocks; reports p95.

Exact: the committed blocks of both runs equal a batch join of the same events.
Writes ``bench/results/stream_join.json`` (``--quick``: ``stream_join_quick.json``, so the full-size figures stay).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402
from runtime.config import parse_config  # noqa: E402
from runtime.report import Reporter  # noqa: E402
from runtime.stream import step  # noqa: E402
from runtime.stream.blocks import BlockStore  # noqa: E402
from runtime.stream.synth import ID_COLUMN, batch_join, make_events, write_parts  # noqa: E402
from tests.pki import make_party, tls_config  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "stream_join.json"
MAX_DELAY = 600.0


def configs(work: Path, pki: Any, stream: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    alpha, beta = pki
    port = free_port()
    base = {"job_id": f"bench-{work.name}", "stream": stream}
    leader = {
        **base,
        "role": "leader",
        "listen_address": f"127.0.0.1:{port}",
        "tls": tls_config(alpha, beta),
        "data": {"path": str(work / "in-alpha"), "id_column": ID_COLUMN, "label_column": "label"},
        "output_dir": str(work / "alpha"),
    }
    follower = {
        **base,
        "role": "follower",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(beta, alpha),
        "data": {"path": str(work / "in-beta"), "id_column": ID_COLUMN},
        "output_dir": str(work / "beta"),
    }
    (work / "in-alpha").mkdir(parents=True, exist_ok=True)
    (work / "in-beta").mkdir(parents=True, exist_ok=True)
    return leader, follower


def run_pair(leader: dict[str, Any], follower: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def go(name: str, raw: dict[str, Any]) -> None:
        try:
            out[name] = step.run(parse_config(raw), Reporter(None))
        except BaseException as exc:  # noqa: BLE001 - reported below
            out[name] = exc

    threads = [threading.Thread(target=go, args=(n, c)) for n, c in (("leader", leader), ("follower", follower))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, res in out.items():
        if isinstance(res, BaseException):
            raise SystemExit(f"{name} failed: {res!r}")
    return out


def joined_ids(output_dir: str) -> list[str]:
    store = BlockStore(output_dir)
    last, _ = store.last_committed()
    ids: list[str] = []
    for seq in range(1, last + 1):
        ids.extend(store.read_block(seq).column("example_id").to_pylist())
    return ids


def exact(work: Path, ldf: pd.DataFrame, fdf: pd.DataFrame) -> bool:
    lids, fids = joined_ids(str(work / "alpha")), joined_ids(str(work / "beta"))
    ref = set(batch_join(ldf, fdf, MAX_DELAY)[ID_COLUMN])
    return lids == fids and len(lids) == len(set(lids)) and set(lids) == ref


def throughput(work: Path, pki: Any, n: int) -> dict[str, Any]:
    ldf, fdf = make_events(n, shared=0.7, max_delay=MAX_DELAY, disorder_s=30, seed=11)
    write_parts(ldf, work / "in-alpha", 100_000)
    write_parts(fdf, work / "in-beta", 100_000)
    t = time.perf_counter()
    batch_join(ldf, fdf, MAX_DELAY)
    baseline_s = time.perf_counter() - t
    leader, follower = configs(
        work, pki, {"max_batch_events": 100_000, "stop_when_idle_s": 0.3, "poll_interval_s": 0.05}
    )
    t = time.perf_counter()
    res = run_pair(leader, follower)
    wall = time.perf_counter() - t - 0.3  # minus the idle wait that ends the job
    return {
        "events_per_side": n,
        "seconds": round(wall, 3),
        "events_per_s_per_side": round(n / wall),
        "baseline_batch_join_s": round(baseline_s, 3),
        "baseline_events_per_s": round(n / baseline_s),
        "matched": res["leader"]["matched"],
        "blocks": res["leader"]["blocks_committed"],
        "exact": exact(work, ldf, fdf),
    }


def live(work: Path, pki: Any, seconds: float, rate: int) -> dict[str, Any]:
    leader, follower = configs(work, pki, {"stop_when_idle_s": 1.0, "poll_interval_s": 0.02})
    lefts: list[pd.DataFrame] = []
    rights: list[pd.DataFrame] = []
    stop = threading.Event()
    samples: list[float] = []

    def generate() -> None:
        part, seed, tick = 0, 100, 0.1
        start = time.time()
        while time.time() - start < seconds:
            t0 = time.time()
            n = int(rate * tick)
            ldf, fdf = make_events(n, max_delay=1.0, disorder_s=0.05, t0=t0 - 0.1, span_s=0.1, seed=seed, far=0.0)
            # unique ids per tick
            for df in (ldf, fdf):
                df[ID_COLUMN] = df[ID_COLUMN] + f"-{seed}"
            write_parts(ldf, work / "in-alpha", n, start=part)
            write_parts(fdf, work / "in-beta", n, start=part)
            lefts.append(ldf)
            rights.append(fdf)
            part += 1
            seed += 1
            time.sleep(max(0.0, tick - (time.time() - t0)))

    def sample() -> None:
        blocks = work / "alpha" / "stream" / "blocks"
        newest, seen = None, set()
        while not stop.is_set():
            if blocks.exists():
                for p in blocks.glob("*.json"):
                    if p.name not in seen:
                        seen.add(p.name)
                        m = json.loads(p.read_text())
                        if m["event_time_max"] is not None:
                            newest = max(newest or 0.0, m["event_time_max"])
            if newest is not None:
                samples.append(time.time() - newest)
            time.sleep(0.1)

    gen = threading.Thread(target=generate)
    smp = threading.Thread(target=sample)
    gen.start()
    smp.start()
    run_pair(leader, follower)
    gen.join()
    stop.set()
    smp.join()
    steady = samples[int(len(samples) * 0.2) :] or samples  # skip the start-up
    return {
        "seconds": seconds,
        "rate_per_side": rate,
        "lag_p50_s": round(float(np.percentile(steady, 50)), 3),
        "lag_p95_s": round(float(np.percentile(steady, 95)), 3),
        "exact": exact(work, pd.concat(lefts), pd.concat(rights)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k events per side and 8 s of live events")
    ap.add_argument("--events", type=int, default=None)
    args = ap.parse_args()
    n = args.events or (100_000 if args.quick else 1_000_000)
    live_s = 8.0 if args.quick else 20.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = (make_party(root / "pki", "alpha"), make_party(root / "pki", "beta"))
        thr = throughput(root / "throughput", pki, n)
        lag = live(root / "live", pki, live_s, 10_000)
    result = {
        "events_per_s_per_side": thr["events_per_s_per_side"],
        "lag_p95_s": lag["lag_p95_s"],
        "exact": bool(thr["exact"] and lag["exact"]),
        "throughput": thr,
        "live": lag,
        "targets": {"events_per_s_per_side": 50_000, "lag_p95_s": 2.0, "exact": True},
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "quick": bool(args.quick),
    }
    print(f"{'measure':<34}{'stream join':>14}{'baseline':>14}{'ratio':>8}")
    print(
        f"{'events/s per side (' + str(n) + ')':<34}{thr['events_per_s_per_side']:>14,}"
        f"{thr['baseline_events_per_s']:>14,}{thr['events_per_s_per_side'] / thr['baseline_events_per_s']:>8.3f}"
    )
    print(f"{'lag p95 at 10k events/s (s)':<34}{lag['lag_p95_s']:>14}{'-':>14}{'-':>8}")
    print(f"{'exact (== batch join)':<34}{str(result['exact']):>14}")
    # A --quick run never replaces the full-size figures the targets are read from.
    out = RESULTS.with_name("stream_join_quick.json") if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
