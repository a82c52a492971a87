"""Partitioned PSI (issue 16): P pairs of ordinary PSI give exactly the P = 1 result; retry reuses done partitions."""

from __future__ import annotations

import csv
import json
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.config import parse_config
from runtime.errors import DataError
from runtime.psi import libpsi_engine, partition
from runtime.psi.step import run
from runtime.report import Reporter
from tests.pki import make_party, tls_config

pytestmark = pytest.mark.runtime
KEY = "5e" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"alpha": make_party(d, "alpha"), "beta": make_party(d, "beta")}


def port_base(count: int) -> int:
    """A port p with p … p + count - 1 all free on loopback."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        socks = []
        try:
            for i in range(count):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free port range")


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def datasets(tmp: Path, n: int = 600, seed: int = 7) -> tuple[Path, Path, set[str]]:
    rng = random.Random(seed)
    common = [f"u{rng.randrange(10**9):09d}" for _ in range(n)]
    left = common + [f"L{i}" for i in range(n // 2)] + ["Ü-ß", "007", "7"]
    right = common[: n * 2 // 3] + [f"R{i}" for i in range(n)] + ["Ü-ß", "7"]
    rng.shuffle(left)
    rng.shuffle(right)
    tmp.mkdir(parents=True, exist_ok=True)
    a = write_csv(tmp / "a.csv", ["id", "label", "x"], [[x, str(len(x) % 2), f"a{x}"] for x in left])
    b = write_csv(tmp / "b.csv", ["f", "uid"], [[f"b{x}", x] for x in right])
    return a, b, set(left) & set(right)


def cfg(pki, role: str, data: Path, id_column: str, out: Path, port: int, psi: dict, job: str) -> dict:
    me, peer = (pki["alpha"], pki["beta"]) if role == "leader" else (pki["beta"], pki["alpha"])
    return {
        "job_id": job,
        "role": role,
        "listen_address": f"127.0.0.1:{port}",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(me, peer),
        "data": {"path": str(data), "id_column": id_column},
        "output_dir": str(out / role),
        "psi": {"workers": 0, "batch_size": 64, "protocol": "ecdh", "engine": "builtin", **psi},
        "timeout_s": 60,
    }


def run_partitioned(
    pki,
    a: Path,
    b: Path,
    out: Path,
    count: int,
    *,
    job: str = "job-p",
    reuse: list[str] | None = None,
    only: list[int] | None = None,
    engine: dict[str, Any] | None = None,
) -> dict[tuple[str, int], Any]:
    """Every partition worker of both sides, each in a thread (its own gRPC server or channel)."""
    port = port_base(count)
    results: dict[tuple[str, int], Any] = {}

    def go(role: str, i: int) -> None:
        data, col = (a, "id") if role == "leader" else (b, "uid")
        psi: dict[str, Any] = {"partitions": count, **(engine or {})}
        if count > 1:
            psi["partition"] = {"index": i, "reuse_from": reuse or []} | ({"key": KEY} if role == "leader" else {})
        try:
            results[(role, i)] = run(parse_config(cfg(pki, role, data, col, out, port, psi, job)), Reporter(None))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[(role, i)] = exc

    threads = [
        threading.Thread(target=go, args=(role, i))
        for i in (only if only is not None else range(count))
        for role in ("leader", "follower")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def aligned(out: Path, role: str) -> bytes:
    return (out / role / "psi" / "aligned.csv").read_bytes()


ENGINES = [
    pytest.param({"protocol": "ecdh", "engine": "builtin"}, id="builtin-ecdh"),
    pytest.param(
        {"protocol": "rr22", "engine": "libpsi"},
        id="libpsi-rr22",
        marks=pytest.mark.skipif(libpsi_engine.available() is not None, reason="libpsi does not import here"),
    ),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_partitions_1_2_4_give_exactly_the_single_pair_result(pki, tmp_path, engine):
    a, b, common = datasets(tmp_path / "data")
    base = tmp_path / "p1"
    res = run_partitioned(pki, a, b, base, 1, engine=engine)
    assert res[("leader", 0)]["intersection_size"] == len(common)
    ids = [r[0] for r in csv.reader(aligned(base, "leader").decode().splitlines()[1:])]
    assert set(ids) == common and ids == sorted(ids, key=lambda s: s.encode())
    for count in (2, 4):
        out = tmp_path / f"p{count}"
        res = run_partitioned(pki, a, b, out, count, engine=engine)
        errors = [v for v in res.values() if isinstance(v, Exception)]
        assert not errors, errors
        for role in ("leader", "follower"):
            assert aligned(out, role) == aligned(base, role), (count, role)
            merged = [v for (r, _), v in res.items() if r == role and "merged_by" in v]
            assert merged and merged[-1]["intersection_size"] == len(common)
            assert merged[-1]["input_size"] == (600 + 300 + 3 if role == "leader" else 400 + 600 + 2)
            stats = json.loads((out / role / "psi" / "stats.json").read_text())
            assert stats["partitions"] == count and stats["intersection_size"] == len(common)
            # each partition held only its own share, and every id went to exactly one partition
            sizes = [json.loads((partition.part_dir(out / role, i) / "done.json").read_text()) for i in range(count)]
            assert sum(m["intersection_size"] for m in sizes) == len(common)
            assert all(m["intersection_size"] < len(common) for m in sizes)


def test_partition_addresses():
    plan = partition.PartitionPlan(index=3, count=4, key=None, reuse_from=(), ports="same")
    pods = "fs-j-leader-{partition}.fs-j-leader.ns.svc:17042"
    assert partition._address(pods, plan, listen=False) == "fs-j-leader-3.fs-j-leader.ns.svc:17042"
    assert partition._address("0.0.0.0:17042", plan, listen=True) == "0.0.0.0:17042"  # a pod of its own
    # Dialling a leader on one machine (no placeholder): port + i, whatever this side's convention.
    assert partition._address("10.0.0.5:17040", plan, listen=False) == "10.0.0.5:17043"
    local = partition.PartitionPlan(index=2, count=4, key=None, reuse_from=(), ports="offset")
    assert partition._address("127.0.0.1:17040", local, listen=True) == "127.0.0.1:17042"


def test_partition_of_is_keyed():
    ids = [f"id{i}" for i in range(2000)]
    k1, k2 = bytes(32), b"\x01" * 32
    p1 = [partition.partition_of(k1, i, 4) for i in ids]
    p2 = [partition.partition_of(k2, i, 4) for i in ids]
    assert p1 != p2  # another key, another split
    assert all(400 < p1.count(j) < 600 for j in range(4))


def test_a_failed_partition_fails_both_sides_by_name_and_retry_recomputes_only_it(pki, tmp_path, monkeypatch):
    a, b, common = datasets(tmp_path / "data", n=400)
    # A duplicate id on the follower's side lands in one partition only.
    rows = list(csv.reader(b.open()))
    dup_id = rows[5][1]
    bad = write_csv(tmp_path / "data" / "b_bad.csv", rows[0], rows[1:] + [["dup", dup_id]])
    bad_part = partition.partition_of(bytes.fromhex(KEY), dup_id, 4)

    calls: list[tuple[str, int]] = []
    real = partition._engine

    def counting(cfg, reporter):
        calls.append((cfg.role, int(cfg.job_id.rsplit(".p", 1)[1].split("of")[0])))
        return real(cfg, reporter)

    monkeypatch.setattr(partition, "_engine", counting)
    first = run_partitioned(pki, a, bad, tmp_path / "attempt1", 4, job="job-1")
    for role in ("leader", "follower"):
        err = first[(role, bad_part)]
        assert isinstance(err, Exception) and f"partition {bad_part} of 4" in str(err), (role, err)
        for i in set(range(4)) - {bad_part}:
            assert first[(role, i)]["partition"] == i  # done, not merged: one part is missing
    assert isinstance(first[("follower", bad_part)], DataError) and "duplicate id" in str(first[("follower", bad_part)])
    assert not (tmp_path / "attempt1" / "leader" / "psi" / "aligned.csv").exists()

    calls.clear()
    prev = [str(tmp_path / "attempt1" / "leader"), str(tmp_path / "attempt1" / "follower")]
    second = run_partitioned(pki, a, b, tmp_path / "attempt2", 4, job="job-2", reuse=prev)
    assert not [v for v in second.values() if isinstance(v, Exception)]
    assert sorted(calls) == [("follower", bad_part), ("leader", bad_part)]  # the others were not recomputed
    reference = tmp_path / "single"
    run_partitioned(pki, a, b, reference, 1)
    for role in ("leader", "follower"):
        assert aligned(tmp_path / "attempt2", role) == aligned(reference, role)
        stats = json.loads((tmp_path / "attempt2" / role / "psi" / "stats.json").read_text())
        assert stats["reused_partitions"] == sorted(set(range(4)) - {bad_part})


def test_no_reuse_when_only_one_side_has_the_partition_done(pki, tmp_path, monkeypatch):
    a, b, common = datasets(tmp_path / "data", n=200)
    run_partitioned(pki, a, b, tmp_path / "attempt1", 2, job="job-1")
    # The follower's partition 1 result is lost: the pair must run partition 1 again, on both sides.
    (partition.part_dir(tmp_path / "attempt1" / "follower", 1) / "done.json").unlink()
    calls: list[tuple[str, str]] = []
    real = partition._engine
    monkeypatch.setattr(
        partition, "_engine", lambda cfg, rep: (calls.append((cfg.role, cfg.job_id)), real(cfg, rep))[1]
    )
    prev = [str(tmp_path / "attempt1" / "leader"), str(tmp_path / "attempt1" / "follower")]
    res = run_partitioned(pki, a, b, tmp_path / "attempt2", 2, job="job-2", reuse=prev)
    assert not [v for v in res.values() if isinstance(v, Exception)]
    assert sorted(calls) == [("follower", "job-2.p1of2"), ("leader", "job-2.p1of2")]
    for role in ("leader", "follower"):
        assert aligned(tmp_path / "attempt2", role) == aligned(tmp_path / "attempt1", role)


def test_bad_partition_settings_name_the_field(pki, tmp_path):
    a, b, _ = datasets(tmp_path / "data", n=50)
    raw = cfg(pki, "leader", a, "id", tmp_path, 1, {"partitions": 2, "partition": {"index": 0}}, "j")
    with pytest.raises(Exception, match="psi.partition.key"):
        run(parse_config(raw), Reporter(None))
    raw = cfg(pki, "leader", a, "id", tmp_path, 1, {"partitions": 300}, "j")
    with pytest.raises(Exception, match=r"psi.partitions: must be an integer in \[1, 256\]"):
        run(parse_config(raw), Reporter(None))


def test_bad_input_on_one_side_fails_every_pair_at_once_on_both_sides(pki, tmp_path):
    a, b, _ = datasets(tmp_path / "data", n=100)
    rows = list(csv.reader(a.open()))
    bad = write_csv(tmp_path / "data" / "a_bad.csv", rows[0], rows[1:] + [["", "1", "x"]])
    t0 = time.monotonic()
    res = run_partitioned(pki, bad, b, tmp_path / "out", 2)
    assert time.monotonic() - t0 < 45  # told in the handshake, not left waiting for timeout_s
    for i in range(2):
        leader, follower = res[("leader", i)], res[("follower", i)]
        assert isinstance(leader, DataError) and str(leader).startswith(f"partition {i} of 2: data.path: a_bad.csv row")
        assert "empty id" in str(leader)
        assert f"partition {i} of 2: the leader's partition failed: data.path: a_bad.csv" in str(follower)


def test_quoted_csv_takes_the_csv_path_and_still_matches_the_single_pair(pki, tmp_path):
    a, b, common = datasets(tmp_path / "data", n=150)
    rows = list(csv.reader(a.open()))
    # Fields with a comma, a quote and a line break: written quoted, so lines are not records.
    quoted = [[r[0], r[1], f'a,"{r[2]}"\nnext' if i % 3 == 0 else r[2]] for i, r in enumerate(rows[1:])]
    a2 = write_csv(tmp_path / "data" / "a_quoted.csv", rows[0], quoted)
    assert not partition._plain_after_header(a2) and partition._plain_after_header(b)
    run_partitioned(pki, a2, b, tmp_path / "p1", 1)
    res = run_partitioned(pki, a2, b, tmp_path / "p2", 2)
    assert not [v for v in res.values() if isinstance(v, Exception)]
    for role in ("leader", "follower"):
        assert aligned(tmp_path / "p2", role) == aligned(tmp_path / "p1", role)
    assert b'"' in aligned(tmp_path / "p2", "leader")


def test_the_handshake_refuses_a_pair_that_is_not_this_one(pki, tmp_path):
    """psi_partition.proto: another handshake version, job or partition is refused with the reason, no key given."""
    from fedsite_proto.runtime.v1 import psi_partition_pb2 as pb

    data, _, _ = datasets(tmp_path, n=10)
    leader = parse_config(cfg(pki, "leader", data, "user_id", tmp_path / "out", 17040, {"partitions": 2}, "j1"))
    plan = partition.PartitionPlan(index=1, count=2, key=b"k" * 32, reuse_from=(), ports="offset")
    good = {"protocol_version": partition.HANDSHAKE_VERSION, "job_id": "j1", "partition": 1, "partitions": 2}
    reply = partition._Handshake(leader, plan).Key(pb.PartitionHello(**good), None)
    assert reply.ok and reply.key == b"k" * 32
    for bad, why in (
        ({"protocol_version": 99}, "handshake version mismatch: leader speaks 1, follower 99"),
        ({"job_id": "j2"}, "job mismatch: leader runs j1, follower j2"),
        ({"partition": 0}, "partition mismatch: leader runs partition 1 of 2, follower 0 of 2"),
        ({"partitions": 4}, "partition mismatch: leader runs partition 1 of 2, follower 1 of 4"),
    ):
        hs = partition._Handshake(leader, plan)
        reply = hs.Key(pb.PartitionHello(**(good | bad)), None)
        assert not reply.ok and why in reply.error and reply.key == b""
        assert hs.decided.is_set() and why in hs.error  # the leader's worker fails with the same reason
        answer = partition._Handshake(leader, plan).Reuse(
            pb.PartitionReuseRequest(hello=pb.PartitionHello(**(good | bad))), None
        )
        assert not answer.ok and why in answer.error
