"""The real-time sample join between a leader and a follower runtime over mutual TLS.

Both sides run as threads of this process (real gRPC with TLS, real files); the
crash test kills one side at random protocol points in-process and, for a subset,
kills real `python -m runtime stream_join` subprocesses with SIGKILL.
"""

from __future__ import annotations

import hmac
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.config import parse_config
from runtime.errors import ConfigError
from runtime.stream import step
from runtime.stream.blocks import column_digest, id_digest
from runtime.stream.join import Pending, keyed_hashes
from runtime.stream.synth import ID_COLUMN, TIME_COLUMN, batch_join, make_events, write_parts
from tests.pki import make_party, tls_config
from tests.runtime.helpers import Recorder, free_port

pytestmark = pytest.mark.runtime

_PORTS: set[int] = set()
_PORTS_LOCK = threading.Lock()


def unique_port() -> int:
    """A free port no other trial of this run was given (trials run concurrently)."""
    with _PORTS_LOCK:
        while True:
            port = free_port()
            if port not in _PORTS:
                _PORTS.add(port)
                return port


FAST = {"poll_interval_s": 0.02, "peer_timeout_s": 20, "connect_timeout_s": 20, "stop_when_idle_s": 0.3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    return make_party(d, "alpha"), make_party(d, "beta")


def configs(
    pki, work: Path, stream: dict[str, Any] | None = None, job: str = "job-s", port: int | None = None
) -> tuple[dict, dict]:
    alpha, beta = pki
    port = port or unique_port()
    s = {**FAST, **(stream or {})}
    leader = {
        "job_id": job,
        "role": "leader",
        "listen_address": f"127.0.0.1:{port}",
        "tls": tls_config(alpha, beta),
        "data": {"path": str(work / "in-alpha"), "id_column": ID_COLUMN, "label_column": "label"},
        "output_dir": str(work / "alpha"),
        "stream": dict(s),
    }
    follower = {
        "job_id": job,
        "role": "follower",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(beta, alpha),
        "data": {"path": str(work / "in-beta"), "id_column": ID_COLUMN},
        "output_dir": str(work / "beta"),
        "stream": dict(s),
    }
    (work / "in-alpha").mkdir(parents=True, exist_ok=True)
    (work / "in-beta").mkdir(parents=True, exist_ok=True)
    return leader, follower


def run_side(raw: dict, out: dict, name: str, rep: Recorder) -> None:
    try:
        out[name] = step.run(parse_config(raw), rep)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        out[name] = exc


def run_pair(leader: dict, follower: dict, timeout: float = 60) -> tuple[Any, Any, Recorder, Recorder]:
    out: dict[str, Any] = {}
    reps = {"leader": Recorder(), "follower": Recorder()}
    threads = [
        threading.Thread(target=run_side, args=(cfg, out, name, reps[name]))
        for name, cfg in (("leader", leader), ("follower", follower))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a side hung"
    return out["leader"], out["follower"], reps["leader"], reps["follower"]


def read_blocks(output_dir: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """All committed blocks of a side, in order, and their manifests; checks each manifest against its block."""
    from runtime.stream.blocks import id_digest

    frames, manifests = [], []
    for seq, m in step.iter_blocks(output_dir):
        t = pq.read_table(Path(output_dir) / "stream" / "blocks" / f"{seq:08d}.parquet").to_pandas()
        assert m["seq"] == seq and m["committed"] is True and m["count"] == len(t)
        assert m["id_digest"] == id_digest(list(t["example_id"]))
        assert m["event_time_min"] == t["event_time"].min() and m["event_time_max"] == t["event_time"].max()
        frames.append(t)
        manifests.append(m)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"example_id": [], "event_time": []})
    return df, manifests


def check_exact(work: Path, leader_df: pd.DataFrame, follower_df: pd.DataFrame, max_delay: float) -> int:
    """Both sides' blocks: same ids in the same order, no duplicates, equal to the batch join."""
    lb, lm = read_blocks(str(work / "alpha"))
    fb, fm = read_blocks(str(work / "beta"))
    assert [m["id_digest"] for m in lm] == [m["id_digest"] for m in fm]
    assert list(lb["example_id"]) == list(fb["example_id"])
    assert lb["example_id"].is_unique
    ref = batch_join(leader_df, follower_df, max_delay)
    assert set(lb["example_id"]) == set(ref[ID_COLUMN])
    # each side's rows are its own events, unchanged
    lj = lb.merge(leader_df.rename(columns={ID_COLUMN: "example_id"}), on="example_id", suffixes=("_b", "_s"))
    assert len(lj) == len(lb)
    assert (lj[f"{TIME_COLUMN}_b"] == lj[f"{TIME_COLUMN}_s"]).all() and (lj["label_b"] == lj["label_s"]).all()
    fj = fb.merge(follower_df.rename(columns={ID_COLUMN: "example_id"}), on="example_id", suffixes=("_b", "_s"))
    assert (fj[f"{TIME_COLUMN}_b"] == fj[f"{TIME_COLUMN}_s"]).all() and (fj["f1_b"] == fj["f1_s"]).all()
    assert "label" in lb.columns and "label" not in fb.columns
    return len(lb)


@pytest.mark.parametrize("key", [b"", b"k" * 32, bytes(range(64)), bytes(range(200))])
def test_keyed_hashes_are_hmac_sha256(key: bytes) -> None:
    ids = ["", "a", "click-0001", "é✓-ü", "x" * 300]
    want = [int.from_bytes(hmac.digest(key, s.encode(), "sha256")[:8], "little") for s in ids]
    assert keyed_hashes(key, ids).tolist() == want


def test_column_digest_equals_id_digest() -> None:
    ids = ["a", "", "click-é✓", "x" * 300]
    sliced = pa.chunked_array([pa.array(["skip", *ids[:2]]).slice(1), pa.array(ids[2:]), pa.array([], pa.string())])
    for col in (sliced, pa.array(ids, pa.large_string()), pa.array([], pa.string())):
        assert column_digest(col) == id_digest(col.to_pylist())


def test_pending_index_skips_repeated_ids() -> None:
    p = Pending(by_key=True)
    z = np.zeros(3)
    assert p.append(None, np.array([1, 2, 3], dtype=np.uint64), z, np.arange(3)) == (0, 0)
    assert p.append(None, np.array([4, 2, 4], dtype=np.uint64), z, np.arange(3, 6)) == (3, 2)
    assert p.lookup(np.array([1, 2, 4, 9], dtype=np.uint64)).tolist() == [0, 1, 3, -1]
    p.kill(np.array([1]))
    assert p.lookup(np.array([2], dtype=np.uint64)).tolist() == [-1] and len(p) == 3


def _live(p: Pending) -> list[tuple]:
    idx = np.flatnonzero(p.alive)
    rows = p.take(idx).to_pylist() if p.table is not None else [{}] * len(idx)
    return [
        (int(k), float(t), int(a), tuple(sorted(r.items())))
        for k, t, a, r in zip(p.keys[idx], p.times[idx], p.aux[idx], rows, strict=True)
    ]


@pytest.mark.parametrize("by_key", [True, False])
def test_a_snapshot_and_its_deltas_restore_exactly_the_live_state(by_key: bool) -> None:
    """Random appends (with repeated keys), matches, evictions and compactions; after each step a checkpoint
    (a snapshot now and then, else a delta); the snapshot plus the deltas after it rebuilds the live state,
    key index included, and goes on exactly like it."""
    rng = np.random.default_rng(7 if by_key else 8)
    live = Pending(by_key=by_key)
    snapshot: pa.Table | None = None
    snap_gid = 0
    deltas: list[tuple[pa.Table, pa.Table, int]] = []
    clock, lsn = 0.0, 0
    for step_no in range(120):
        n = int(rng.integers(0, 40))
        keys = rng.integers(0, 400, size=n).astype(np.uint64)
        times = clock + rng.random(n) * 5
        clock += 2
        rows = pa.table({"v": pa.array([f"r{lsn + i}" for i in range(n)])})
        live.append(rows, keys, times, np.arange(lsn, lsn + n))
        lsn += n
        alive = np.flatnonzero(live.alive)
        if len(alive):
            live.kill(rng.choice(alive, size=min(len(alive), int(rng.integers(0, 10))), replace=False))
        live.evict_before(clock - 30)
        if step_no % 50 == 7:
            live.dead = max(live.dead, 50_000)  # force a compaction on the next eviction
        if snapshot is None or rng.random() < 0.1:
            snapshot, snap_gid, deltas = live.snapshot(), live.next_gid, []
        else:
            added, removed = live.delta()
            deltas.append((added, removed, live.next_gid))
        restored = Pending.restore(snapshot, by_key=by_key, next_gid=snap_gid)
        for added, removed, next_gid in deltas:
            restored.apply(added, removed, next_gid)
        assert _live(restored) == _live(live), f"step {step_no}"
        if by_key:
            probe = np.arange(400, dtype=np.uint64)
            assert (restored.keys[np.maximum(restored.lookup(probe), 0)] == probe)[restored.lookup(probe) >= 0].all()
            assert (restored.lookup(probe) >= 0).tolist() == (live.lookup(probe) >= 0).tolist()
        assert restored.next_gid == live.next_gid


def test_join_equals_batch_join(pki, tmp_path: Path) -> None:
    ldf, fdf = make_events(3000, max_delay=600, disorder_s=30, seed=1)
    write_parts(ldf, tmp_path / "in-alpha", 400)
    write_parts(fdf, tmp_path / "in-beta", 350, fmt="csv")
    leader, follower = configs(pki, tmp_path, {"max_batch_events": 500})
    lres, fres, lrep, frep = run_pair(leader, follower)
    assert not isinstance(lres, BaseException), lres
    assert not isinstance(fres, BaseException), fres
    n = check_exact(tmp_path, ldf, fdf, 600)
    assert n > 1500
    assert lres["matched"] == fres["matched"] == n
    assert lres["events_read"] == fres["events_read"] == 3000
    assert lres["late_events"] == fres["late_events"] == 0
    assert lres["blocks_committed"] >= 2
    names = {e["name"] for e in lrep.events if e["type"] == "metric"}
    assert {"events_read", "matched", "match_rate", "late_events", "blocks_committed", "lag_s"} <= names
    manifest = json.loads((tmp_path / "alpha" / "stream" / "blocks" / "00000001.json").read_text())
    assert set(manifest) == {
        "seq",
        "count",
        "id_digest",
        "event_time_min",
        "event_time_max",
        "source_offset",
        "committed",
    }
    assert manifest["source_offset"]["file"].startswith("part-")


def test_bad_config_is_named(pki, tmp_path: Path) -> None:
    leader, follower = configs(pki, tmp_path, {"max_delay": 5})
    with pytest.raises(ConfigError, match=r"stream\.max_delay: unknown parameter"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"source": "kafka"})
    with pytest.raises(ConfigError, match=r"stream\.source: must be one of folder, nats"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"max_delay_s": -1})
    with pytest.raises(ConfigError, match=r"stream\.max_delay_s: must be >= 0"):
        step.run(parse_config(leader), Recorder())
    leader, follower = configs(pki, tmp_path, {"source": "nats"})
    with pytest.raises(ConfigError, match=r"stream\.nats: required"):
        step.run(parse_config(leader), Recorder())
    leader, _ = configs(pki, tmp_path)
    leader["data"]["path"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="data.path: .*nowhere is not a folder"):
        step.run(parse_config(leader), Recorder())
    leader, _ = configs(pki, tmp_path)
    leader["data"]["label_column"] = None
    with pytest.raises(ConfigError, match="data.label_column: required for the leader"):
        step.run(parse_config(leader), Recorder())
    assert not (tmp_path / "alpha" / "stream" / "blocks").exists() or not any(
        (tmp_path / "alpha" / "stream" / "blocks").iterdir()
    )


class Crash(BaseException):
    """A simulated kill: not an Exception, so the side drops its link without a word, like a dead process."""


class Faults:
    """Dispatches the runtime's crash-injection hook to the trial running that job."""

    def __init__(self) -> None:
        self.trials: dict[str, Any] = {}

    def __call__(self, job: str, role: str, point: str) -> None:
        hook = self.trials.get(job)
        if hook is not None:
            hook(role, point)


def crash_trial(
    pki, faults: Faults, work: Path, seed: int, victim: str, at: int, events: int = 30, again_at: int = 0
) -> int:
    """One small job; `victim` dies at its `at`-th protocol point and restarts (and, with `again_at`, dies
    again that many points after its restart, and restarts again).

    Returns the points the victim passed (at=0: a crash-free run) or how many times it crashed."""
    ldf, fdf = make_events(events, max_delay=600, disorder_s=30, seed=seed, far=0.1)
    write_parts(ldf, work / "in-alpha", 9)
    write_parts(fdf, work / "in-beta", 7)
    job = f"job-{work.name}"
    leader, follower = configs(pki, work, {"max_batch_events": 8, "stop_when_idle_s": 0.05}, job=job)
    cfgs = {"leader": leader, "follower": follower}
    plan = [at] + ([at + again_at] if at and again_at else [])
    seen = {"n": 0, "crashes": 0}
    lock = threading.Lock()

    def fault(role: str, point: str) -> None:
        if role != victim:
            return
        with lock:
            seen["n"] += 1
            if seen["crashes"] < len(plan) and seen["n"] == plan[seen["crashes"]]:
                seen["crashes"] += 1
                raise Crash(point)

    out: dict[str, Any] = {}
    threads = {n: threading.Thread(target=run_side, args=(c, out, n, Recorder())) for n, c in cfgs.items()}
    faults.trials[job] = fault
    try:
        for t in threads.values():
            t.start()
        threads[victim].join(30)
        while isinstance(out.get(victim), Crash):
            again = threading.Thread(target=run_side, args=(cfgs[victim], out, victim, Recorder()))
            again.start()
            again.join(30)
            assert not again.is_alive(), "the restarted side hung"
        for t in threads.values():
            t.join(30)
            assert not t.is_alive(), "a side hung"
    finally:
        faults.trials.pop(job, None)
    for name in cfgs:
        assert not isinstance(out[name], BaseException), f"{name}: {out[name]!r}"
    check_exact(work, ldf, fdf, 600)
    return seen["n"] if not at else seen["crashes"]


def test_exactly_once_across_random_crashes(pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """>= 100 trials: either side dies at a random protocol point (incl. between a file's write and its
    rename), restarts, and the union of both sides' blocks still equals the batch join, once each. A quarter
    of the trials die a second time after restarting. A full snapshot of the join state every 3 blocks
    (deltas between), so resumes go through snapshots, chains of deltas and pruned state.
    Trials run six at a time (each its own job, port and folders)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from runtime.stream import blocks

    faults = Faults()
    monkeypatch.setattr(step, "FAULT", faults)
    monkeypatch.setattr(blocks, "SNAPSHOT_EVERY", 3)
    rng = np.random.default_rng(20261129)
    # how many protocol points each side passes in a crash-free run of this size
    points = {v: crash_trial(pki, faults, tmp_path / f"dry-{v}", 7, v, at=0) for v in ("leader", "follower")}
    assert points["leader"] > 15 and points["follower"] > 15
    plan = []
    for trial in range(110):
        victim = "leader" if trial % 2 else "follower"
        at = int(rng.integers(1, int(points[victim] * 0.6)))  # trials' data differ: stay inside their runs
        again_at = int(rng.integers(1, int(points[victim] * 0.3))) if trial % 4 < 2 else 0
        plan.append((tmp_path / f"t{trial}", int(rng.integers(1 << 30)), victim, at, 30, again_at))
    with ThreadPoolExecutor(6) as pool:
        crashed = list(pool.map(lambda a: crash_trial(pki, faults, *a), plan))
    victims = [v for (_, _, v, *_), c in zip(plan, crashed, strict=True) if c]
    assert len(victims) >= 100 and victims.count("leader") >= 45 and victims.count("follower") >= 45
    assert sum(1 for c in crashed if c == 2) >= 15  # trials that died twice


def test_late_events_are_counted_and_idle_sources_wait(pki, tmp_path: Path) -> None:
    """Events older than their side's watermark are counted as late (metric and result), never silently dropped;
    an idle source shows the "waiting for data" stage, not a failure."""
    ldf, fdf = make_events(600, max_delay=60, disorder_s=5, seed=4, span_s=600)
    write_parts(ldf, tmp_path / "in-alpha", 200)
    write_parts(fdf, tmp_path / "in-beta", 200)
    # then 25 leader events and 10 follower events from long ago land: late on both sides
    old_l = ldf.iloc[:25].copy()
    old_l["click_id"] = [f"old{i}" for i in range(25)]
    old_l["event_time"] -= 5000
    old_f = fdf.iloc[:10].copy()
    old_f["click_id"] = [f"gone{i}" for i in range(10)]
    old_f["event_time"] -= 5000
    write_parts(old_l, tmp_path / "in-alpha", 100, start=50)
    write_parts(old_f, tmp_path / "in-beta", 100, start=50)
    leader, follower = configs(
        pki, tmp_path, {"max_delay_s": 60, "lateness_s": 10, "max_batch_events": 150, "stop_when_idle_s": 2.5}
    )
    lres, fres, lrep, frep = run_pair(leader, follower)
    assert not isinstance(lres, BaseException), lres
    assert lres["late_events"] == 25 and fres["late_events"] == 10
    assert lres["partner"]["late_events"] == 10
    late = [e["value"] for e in lrep.events if e["type"] == "metric" and e["name"] == "late_events"]
    assert late[-1] == 25
    assert any(e["type"] == "progress" and e["stage"] == "waiting for data" for e in lrep.events)
    assert any("waiting for data" in e.get("line", "") for e in frep.events if e["type"] == "log")
    assert not any(e["type"] == "failed" for e in lrep.events + frep.events)
    # the on-time events joined exactly
    n = check_exact(tmp_path, pd.concat([ldf, old_l]), pd.concat([fdf, old_f]), 60)
    assert n == lres["matched"] > 0


@pytest.mark.parametrize("idle_timeout_s", [0.5, None])
def test_a_quiet_source_stops_holding_the_join_back(pki, tmp_path: Path, idle_timeout_s: float | None) -> None:
    """The follower's source goes quiet while the leader's runs on: after idle_timeout_s its watermark follows
    the leader's, so the leader's events that can no longer match expire; follower events that then arrive
    behind that watermark count as late. Without it, the leader's events wait for ever and nothing is late."""
    ldf, fdf = make_events(300, max_delay=60, disorder_s=2, seed=8, span_s=300)
    t_end = float(ldf["event_time"].max())
    solo = ldf.iloc[:100].copy()  # leader events 1,000 s later that nothing will match
    solo["click_id"] = [f"solo{i}" for i in range(100)]
    solo["event_time"] = t_end + 1000 + np.arange(100.0)
    tardy = fdf.iloc[:5].copy()  # follower events that land later, 100 s after the shared ones
    tardy["click_id"] = [f"tardy{i}" for i in range(5)]
    tardy["event_time"] = t_end + 100
    write_parts(pd.concat([ldf, solo]), tmp_path / "in-alpha", 200)
    write_parts(fdf, tmp_path / "in-beta", 200)
    leader, follower = configs(
        pki,
        tmp_path,
        {"max_delay_s": 60, "lateness_s": 10, "stop_when_idle_s": 3.0, "idle_timeout_s": idle_timeout_s},
    )
    timer = threading.Timer(1.5, lambda: write_parts(tardy, tmp_path / "in-beta", 100, start=50))
    timer.start()
    try:
        lres, fres, _, frep = run_pair(leader, follower)
    finally:
        timer.cancel()
    assert not isinstance(lres, BaseException), lres
    assert not isinstance(fres, BaseException), fres
    n = check_exact(tmp_path, ldf, fdf, 60)
    assert n == lres["matched"] > 0  # the shared events joined exactly either way
    logs = [e.get("line", "") for e in frep.events if e["type"] == "log"]
    unmatched = len(ldf) - n  # the leader's own events with no partner among the shared ones
    if idle_timeout_s is None:
        # no solo event expired (they wait for the follower's watermark), and no tardy one was late
        assert lres["expired"] <= unmatched and fres["late_events"] == 0 and fres["watermark_follows"] == 0
        assert not any("now follows" in line for line in logs)
    else:
        # the solo events older than the followed watermark minus max_delay expired; the tardy ones were late
        assert lres["expired"] >= unmatched + 20 and fres["late_events"] == 5 and fres["watermark_follows"] >= 1
        assert any("now follows the partner's" in line for line in logs)
        assert any("delivers again" in line for line in logs)


def test_stop_from_the_follower(pki, tmp_path: Path) -> None:
    ldf, fdf = make_events(200, seed=5)
    write_parts(ldf, tmp_path / "in-alpha", 100)
    write_parts(fdf, tmp_path / "in-beta", 100)
    stop = tmp_path / "stop-beta"
    leader, follower = configs(pki, tmp_path, {"stop_when_idle_s": None})
    follower["stream"]["stop_file"] = str(stop)
    stop.write_text("")
    lres, fres, _, _ = run_pair(leader, follower)
    assert fres["stopped"] == "stopped (stop file)"
    assert lres["stopped"] == "the partner stopped the job: stopped (stop file)"


@pytest.fixture()
def jetstream():
    """A JetStream stream of its own on the local NATS server, deleted afterwards."""
    import asyncio
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import nats

    name = f"SJOIN_{uuid.uuid4().hex[:10]}"
    subjects = (f"{name.lower()}.alpha", f"{name.lower()}.beta")

    async def call(fn):
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    def run(fn):
        # On a thread of its own: a session fixture (Playwright's sync API) may hold a running loop here.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, call(fn)).result()

    run(lambda js: js.add_stream(name=name, subjects=list(subjects)))
    yield name, subjects, run
    run(lambda js: js.delete_stream(name))


def publish(run, subject: str, df: pd.DataFrame) -> None:
    rows = df.to_dict("records")

    async def go(js):
        for r in rows:
            await js.publish(subject, json.dumps(r).encode())

    run(go)


def test_nats_jetstream_source(pki, tmp_path: Path, jetstream) -> None:
    """Both sides read a real JetStream subject through durable consumers; a second run resumes after the
    last committed block (nothing joined twice), and the consumers' acks follow the commits."""
    name, (sa, sb), run = jetstream
    ldf, fdf = make_events(1000, seed=6)
    publish(run, sa, ldf.iloc[:600])
    publish(run, sb, fdf.iloc[:500])
    nats_cfg = {"source": "nats", "max_batch_events": 200}
    leader, follower = configs(pki, tmp_path, nats_cfg)
    leader["stream"]["nats"] = {"url": "nats://127.0.0.1:4222", "stream": name, "subject": sa}
    follower["stream"]["nats"] = {"url": "nats://127.0.0.1:4222", "stream": name, "subject": sb}
    del leader["data"]["path"], follower["data"]["path"]
    lres, fres, _, _ = run_pair(leader, follower)
    assert not isinstance(lres, BaseException), lres
    assert not isinstance(fres, BaseException), fres
    assert lres["events_read"] == 600 and fres["events_read"] == 500
    first = lres["last_block"]
    assert first >= 1
    publish(run, sa, ldf.iloc[600:])
    publish(run, sb, fdf.iloc[500:])
    lres, fres, _, _ = run_pair(leader, follower)
    assert not isinstance(lres, BaseException), lres
    assert lres["last_block"] > first
    assert lres["events_read"] == 1000 and fres["events_read"] == 1000  # counters carry over, no re-read
    check_exact(tmp_path, ldf, fdf, 600)
    # acks: every event up to the last committed block is acknowledged, and none waits for an ack.
    # (The server may move a filtered consumer's floor on past the other subject's later messages.)
    _, lm = read_blocks(str(tmp_path / "alpha"))
    info = run(lambda js: js.consumer_info(name, "fedsite-job-s-leader"))
    assert info.ack_floor.stream_seq >= lm[-1]["source_offset"]["stream_seq"]
    assert info.num_ack_pending == 0 and info.num_pending == 0


def test_nats_errors_are_named(pki, tmp_path: Path, jetstream) -> None:
    name, (sa, _), _ = jetstream
    leader, _ = configs(pki, tmp_path, {"source": "nats"})
    leader["stream"]["nats"] = {"url": "nats://127.0.0.1:4222", "stream": "NO_SUCH_STREAM", "subject": sa}
    with pytest.raises(ConfigError, match="stream.nats.stream: no JetStream stream 'NO_SUCH_STREAM'"):
        step.run(parse_config(leader), Recorder())
    leader["stream"]["nats"] = {"url": "nats://127.0.0.1:4222", "stream": name, "subject": "other.subject"}
    with pytest.raises(ConfigError, match="stream.nats.subject: 'other.subject' is not a subject of stream"):
        step.run(parse_config(leader), Recorder())


def test_sigkill_of_real_runtime_processes(pki, tmp_path: Path) -> None:
    """A subset with real processes: `python -m runtime stream_join` pairs, one side SIGKILLed mid-run and
    restarted; the blocks still equal the batch join, once each."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    root = Path(__file__).resolve().parents[2]
    rng = np.random.default_rng(7)
    for trial, victim in enumerate(("follower", "leader")):
        work = tmp_path / f"k{trial}"
        ldf, fdf = make_events(3000, seed=40 + trial)
        write_parts(ldf, work / "in-alpha", 300)
        write_parts(fdf, work / "in-beta", 300)
        leader, follower = configs(pki, work, {"max_batch_events": 100, "stop_when_idle_s": 0.5}, job=f"job-k{trial}")
        paths = {}
        for name, cfg in (("leader", leader), ("follower", follower)):
            paths[name] = work / f"{name}.json"
            paths[name].write_text(json.dumps(cfg))

        def start(name: str, paths: dict[str, Path] = paths) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "runtime", "stream_join", "--config", str(paths[name])],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(root)},
            )

        procs = {n: start(n) for n in ("leader", "follower")}
        blocks = work / ("alpha" if victim == "leader" else "beta") / "stream" / "blocks"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (blocks.exists() and any(blocks.glob("*.json"))):
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        procs[victim] = start(victim)
        for name, p in procs.items():
            assert p.wait(60) == 0, f"trial {trial}: {name} exited {p.returncode}"
        check_exact(work, ldf, fdf, 600)
