"""The libpsi engine behind the same PSI job (issue 9): same output as the built-in engine, TLS link, fallback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.config import parse_config
from runtime.errors import ConfigError, DataError, PeerError
from runtime.psi import libpsi_engine
from runtime.psi.step import run
from runtime.report import Reporter
from tests.pki import make_party
from tests.runtime.test_psi import PY, REPO, aligned_ids, free_port, make_cfg, psi_pair, read_csv, write_csv

pytestmark = pytest.mark.runtime
needs_libpsi = pytest.mark.skipif(
    libpsi_engine.available() is not None, reason=f"libpsi unavailable: {libpsi_engine.available()}"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"alpha": make_party(d, "alpha"), "beta": make_party(d, "beta"), "mallory": make_party(d, "mallory")}


class Capture(Reporter):
    def __init__(self) -> None:
        super().__init__(None)
        self.lines: list[str] = []
        self.progress_values: list[float] = []

    def log(self, line: str, level: str = "info") -> None:
        self.lines.append(line)

    def progress(self, value: float, stage: str) -> None:
        self.progress_values.append(value)


@needs_libpsi
def test_rr22_job_path_matches_builtin_rows_and_order(tmp_path, pki):
    left = [str(i) for i in range(0, 300)] + ["ünï", "日本", "x y"]
    right = [str(i) for i in range(150, 420)] + ["日本", "x y", "zz"]
    lib = psi_pair(tmp_path / "lib", pki, left, right, {"protocol": "rr22"})
    ref = psi_pair(tmp_path / "ref", pki, left, right, {"protocol": "ecdh", "engine": "builtin"})
    for role in ("leader", "follower"):
        assert not isinstance(lib[role], Exception), lib
        assert lib[role]["engine"] == "libpsi" and lib[role]["protocol"] == "rr22"
        assert ref[role]["engine"] == "builtin"
        assert lib[role]["intersection_size"] == ref[role]["intersection_size"] == len(set(left) & set(right))
        assert read_csv(tmp_path / "lib" / role / "psi" / "aligned.csv") == read_csv(
            tmp_path / "ref" / role / "psi" / "aligned.csv"
        )
        assert not (tmp_path / "lib" / role / "psi" / "checkpoint").exists()
    assert aligned_ids(tmp_path / "lib", "leader") == aligned_ids(tmp_path / "lib", "follower")
    lead = read_csv(tmp_path / "lib" / "leader" / "psi" / "aligned.csv")
    assert lead[0] == ["id", "label"]  # own columns, id first


plain_id = st.text(alphabet="abcxyz0123456789-_é日", min_size=1, max_size=6)


@needs_libpsi
@settings(
    max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    common=st.sets(plain_id, min_size=1, max_size=20),
    only_left=st.sets(plain_id, max_size=15),
    only_right=st.sets(plain_id, max_size=15),
    protocol=st.sampled_from(["kkrt", "ecdh", "auto"]),
)
def test_engines_agree_property(tmp_path_factory, pki, common, only_left, only_right, protocol):
    left = list(common | only_left)
    right = list(common | (only_right - only_left))
    tmp = tmp_path_factory.mktemp("eng")
    engine = "libpsi" if protocol == "ecdh" else "auto"
    lib = psi_pair(tmp / "lib", pki, left, right, {"protocol": protocol, "engine": engine})
    ref = psi_pair(tmp / "ref", pki, left, right, {"protocol": "ecdh", "engine": "builtin"})
    assert not isinstance(lib["leader"], Exception) and not isinstance(lib["follower"], Exception), lib
    assert lib["leader"]["engine"] == "libpsi", lib
    assert ref["leader"]["engine"] == "builtin", ref
    for role in ("leader", "follower"):
        assert read_csv(tmp / "lib" / role / "psi" / "aligned.csv") == read_csv(
            tmp / "ref" / role / "psi" / "aligned.csv"
        )
    assert sorted(aligned_ids(tmp / "lib", "leader")) == sorted(set(left) & set(right))


@needs_libpsi
def test_libpsi_link_refuses_unpinned_certificate(tmp_path, pki):
    """The brpc link itself checks certificates: a follower presenting another CA's certificate is refused."""
    a = write_csv(tmp_path / "a.csv", ["id"], [["1"], ["2"]])
    b = write_csv(tmp_path / "b.csv", ["id"], [["2"], ["3"]])
    lp, fp = free_port(), free_port()
    parties = [("leader", f"127.0.0.1:{lp}"), ("follower", f"127.0.0.1:{fp}")]
    lcfg = parse_config(make_cfg(tmp_path, pki, "leader", a, "id", lp, {}, timeout_s=4))
    fcfg = parse_config(make_cfg(tmp_path, pki, "follower", b, "id", lp, {}, me=pki["mallory"], timeout_s=4))
    out: dict = {}

    def go(role, cfg):
        try:
            out[role] = libpsi_engine.run_libpsi(cfg, "rr22", parties, Reporter(None), time.monotonic())
        except Exception as exc:  # noqa: BLE001
            out[role] = exc

    ts = [threading.Thread(target=go, args=("leader", lcfg)), threading.Thread(target=go, args=("follower", fcfg))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert isinstance(out["leader"], PeerError), out
    assert isinstance(out["follower"], PeerError), out
    assert "link" in str(out["follower"]) and "link" in str(out["leader"])
    for role in ("leader", "follower"):
        assert not (tmp_path / role / "psi" / "aligned.csv").exists()
        assert not (tmp_path / role / "psi" / "stats.json").exists()


@needs_libpsi
@pytest.mark.parametrize("bad", ["leader", "follower"])
def test_libpsi_duplicates_fail_on_both_sides(tmp_path, pki, bad):
    """The side with the duplicate reports its own data error; the other names the partner's input.

    Neither reports a dropped link or a timeout: both sides' runtimes once raced their link's teardown.
    """
    dup, ok = ["a", "b", "a"], ["a", "b"]
    res = psi_pair(tmp_path, pki, *((dup, ok) if bad == "leader" else (ok, dup)), {"protocol": "rr22"})
    good = "follower" if bad == "leader" else "leader"
    assert isinstance(res[bad], DataError) and "duplicate id 'a'" in str(res[bad]), res
    assert isinstance(res[good], PeerError), res
    assert "the partner's input cannot be used" in str(res[good]) and "duplicate id 'a'" in str(res[good]), res
    for role in ("leader", "follower"):
        assert not (tmp_path / role / "psi" / "stats.json").exists()
        assert not (tmp_path / role / "psi" / "aligned.csv").exists()


def test_fallback_when_libpsi_is_unavailable_everywhere(tmp_path, pki, monkeypatch):
    monkeypatch.setenv("FEDSITE_PSI_NO_LIBPSI", "1")
    libpsi_engine.available.cache_clear()
    try:
        res = psi_pair(tmp_path, pki, ["1", "2", "3"], ["2", "3", "4"], {"protocol": "rr22"})
        for role in ("leader", "follower"):
            assert not isinstance(res[role], Exception), res
            assert res[role]["engine"] == "builtin" and res[role]["protocol"] == "ecdh"
            assert set(aligned_ids(tmp_path, role)) == {"2", "3"}
        raw = make_cfg(
            tmp_path, pki, "leader", tmp_path / "a.csv", "id", free_port(), {"protocol": "rr22", "engine": "libpsi"}
        )
        with pytest.raises(ConfigError, match="libpsi"):
            run(parse_config(raw), Reporter(None))
    finally:
        libpsi_engine.available.cache_clear()


def test_quoted_csv_falls_back_to_builtin(tmp_path, pki):
    res = psi_pair(tmp_path, pki, ["a,b", "c"], ["a,b", "d"], {"protocol": "auto"})
    for role in ("leader", "follower"):
        assert not isinstance(res[role], Exception), res
        assert res[role]["engine"] == "builtin"
        assert aligned_ids(tmp_path, role) == ["a,b"]


@needs_libpsi
def test_auto_with_one_side_lacking_libpsi_falls_back_on_both(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id"], [[str(i)] for i in range(50)])
    b = write_csv(tmp_path / "b.csv", ["id"], [[str(i)] for i in range(25, 80)])
    port = free_port()
    procs = {}
    for role, data, env_extra in (("leader", a, {}), ("follower", b, {"FEDSITE_PSI_NO_LIBPSI": "1"})):
        cfg = make_cfg(tmp_path, pki, role, data, "id", port, {"protocol": "auto"})
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(cfg))
        env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
        procs[role] = subprocess.Popen(
            [PY, "-m", "runtime", "psi", "--config", str(path)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
    errs = {role: p.communicate(timeout=90)[1] for role, p in procs.items()}
    for role, p in procs.items():
        assert p.returncode == 0, errs[role]
        stats = json.loads((tmp_path / role / "psi" / "stats.json").read_text())
        assert stats["engine"] == "builtin" and stats["protocol"] == "ecdh"
        assert "engine builtin, protocol ecdh" in errs[role]
        assert stats["intersection_size"] == 25
    assert "libpsi not used" in errs["follower"] and "FEDSITE_PSI_NO_LIBPSI" in errs["follower"]
    assert aligned_ids(tmp_path, "leader") == aligned_ids(tmp_path, "follower")


@needs_libpsi
def test_libpsi_progress_reaches_the_reporter(tmp_path, pki):
    """libpsi's own progress hook never reports: the step's progress follows libpsi's log, bucket by bucket."""
    a = write_csv(tmp_path / "a.csv", ["id"], [[str(i)] for i in range(5000)])
    b = write_csv(tmp_path / "b.csv", ["id"], [[str(i)] for i in range(1000, 5000)])
    port = free_port()
    reps = {"leader": Capture(), "follower": Capture()}
    out: dict = {}

    def go(role, data):
        try:
            out[role] = run(
                parse_config(
                    make_cfg(tmp_path, pki, role, data, "id", port, {"protocol": "rr22", "bucket_size": 1024})
                ),
                reps[role],
            )
        except Exception as exc:  # noqa: BLE001
            out[role] = exc

    ts = [threading.Thread(target=go, args=("leader", a)), threading.Thread(target=go, args=("follower", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    for role in ("leader", "follower"):
        assert out[role]["engine"] == "libpsi", out
        values = reps[role].progress_values
        assert values and values[-1] == 1.0
        assert values == sorted(values), values  # never goes back
        # bucketing, five buckets of 1024 ids (the larger side has 5000), libpsi's output, the runtime's
        between = [v for v in values if 0.25 < v < 0.70]
        assert len(between) >= 4, values
        assert {libpsi_engine.STAGE_PROGRESS[s] for s in ("preprocess", "online", "online_done", "finalized")} <= set(
            values
        ), values
        assert any("engine libpsi, protocol rr22" in line for line in reps[role].lines)


@needs_libpsi
def test_cancel_stops_libpsi_promptly_without_output(tmp_path, pki):
    """Cancelling = the launcher kills the runtime: its libpsi child dies with it, nothing looks complete."""
    a = write_csv(tmp_path / "a.csv", ["id"], [[f"u{i}"] for i in range(20000)])
    b = write_csv(tmp_path / "b.csv", ["id"], [[f"u{i}"] for i in range(10000, 30000)])
    port = free_port()
    procs = {}
    for role, data in (("leader", a), ("follower", b)):
        cfg = make_cfg(tmp_path, pki, role, data, "id", port, {"protocol": "ecdh", "engine": "libpsi"}, timeout_s=60)
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(cfg))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs[role] = subprocess.Popen(
            [PY, "-m", "runtime", "psi", "--config", str(path)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
    leader = procs["leader"]
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(leader.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 60
        while not any("libpsi: link to the partner up" in line for line in lines) and time.monotonic() < end:
            time.sleep(0.1)
        assert any("libpsi: link" in line for line in lines), lines
        kids = subprocess.run(["pgrep", "-P", str(leader.pid)], capture_output=True, text=True).stdout.split()
        assert kids, "libpsi runs in a child process"
        leader.kill()
        leader.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            os.path.exists(f"/proc/{k}") and "zombie" not in open(f"/proc/{k}/status").read() for k in kids
        ):
            time.sleep(0.1)
        alive = [k for k in kids if os.path.exists(f"/proc/{k}") and "zombie" not in open(f"/proc/{k}/status").read()]
        assert not alive, f"libpsi children still running after cancel: {alive}"
        t0 = time.monotonic()
        _, ferr = procs["follower"].communicate(timeout=60)
        assert procs["follower"].returncode == 1, ferr
        assert time.monotonic() - t0 < 20, "the follower notices the leader is gone without waiting for a timeout"
        assert "leader" in ferr.splitlines()[-1], ferr[-2000:]
        for role in ("leader", "follower"):
            assert not (tmp_path / role / "psi" / "aligned.csv").exists()
            assert not (tmp_path / role / "psi" / "stats.json").exists()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
