"""PSI between two runtimes over gRPC with mutual TLS on loopback (issue 5)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.config import parse_config
from runtime.errors import ConfigError, DataError, PeerError
from runtime.psi import crypto
from runtime.psi.h2c import Expander, HashToCurve, hash_to_u_ro, x_double
from runtime.psi.step import run
from runtime.report import Reporter
from tests.pki import make_party, tls_config

pytestmark = pytest.mark.runtime
REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    return {"alpha": make_party(d, "alpha"), "beta": make_party(d, "beta"), "mallory": make_party(d, "mallory")}


def write_csv(path: Path, header: list[str], rows: list[list[Any]], crlf: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n" if crlf else "\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def make_cfg(
    tmp: Path,
    pki,
    role: str,
    data: Path,
    id_column: str,
    port: int,
    psi: dict,
    *,
    me=None,
    peer=None,
    timeout_s: float = 60,
) -> dict:
    me = me or (pki["alpha"] if role == "leader" else pki["beta"])
    peer = peer or (pki["beta"] if role == "leader" else pki["alpha"])
    return {
        "job_id": "job-1",
        "role": role,
        "listen_address": f"127.0.0.1:{port}",
        "peer_address": f"127.0.0.1:{port}",
        "tls": tls_config(me, peer),
        "data": {"path": str(data), "id_column": id_column},
        "output_dir": str(tmp / role),
        "psi": {"workers": 0, "batch_size": 64, **psi},
        "timeout_s": timeout_s,
    }


def run_pair(leader_cfg: dict, follower_cfg: dict) -> dict[str, Any]:
    """Both sides in threads of this process (each with its own gRPC server/channel)."""
    out: dict[str, Any] = {}

    def go(role: str, raw: dict) -> None:
        try:
            out[role] = run(parse_config(raw), Reporter(None))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[role] = exc

    threads = [
        threading.Thread(target=go, args=("leader", leader_cfg)),
        threading.Thread(target=go, args=("follower", follower_cfg)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def psi_pair(tmp: Path, pki, left: list, right: list, psi: dict, *, extra_left=None, extra_right=None):
    tmp.mkdir(parents=True, exist_ok=True)
    a = write_csv(tmp / "a.csv", ["id", "label"], [[x, (extra_left or {}).get(x, "1")] for x in left])
    b = write_csv(tmp / "b.csv", ["f", "uid"], [[(extra_right or {}).get(x, "z"), x] for x in right])
    port = free_port()
    res = run_pair(
        make_cfg(tmp, pki, "leader", a, "id", port, psi), make_cfg(tmp, pki, "follower", b, "uid", port, psi)
    )
    return res


def aligned_ids(tmp: Path, role: str) -> list[str]:
    rows = read_csv(tmp / role / "psi" / "aligned.csv")
    return [r[0] for r in rows[1:]]


# -- cryptographic building blocks -----------------------------------------------------


def test_hash_to_curve_matches_rfc9380_vectors():
    """curve25519_XMD:SHA-512_ELL2_RO_ (RFC 9380 J.4.1): P.x after clear_cofactor = [8]."""
    exp = Expander(b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_")
    vectors = {
        b"": "2de3780abb67e861289f5749d16d3e217ffa722192d16bbd9d1bfb9d112b98c0",
        b"abc": "2b4419f1f2d48f5872de692b0aca72cc7b0a60915dd70bde432e826b6abc526d",
        b"abcdef0123456789": "68ca1ea5a6acf4e9956daa101709b1eee6c1bb0df1de3b90d4602382a104c036",
    }
    for msg, px in vectors.items():
        u = hash_to_u_ro(exp, msg)
        for _ in range(3):
            u = x_double(u)
        assert format(int(u), "064x") == px


def test_x25519_backends_agree_and_commute():
    pts = b"".join(HashToCurve()(f"id-{i}".encode()) for i in range(20))
    a, b = crypto.new_ecdh_key(), crypto.new_ecdh_key()
    assert crypto.x25519_many(a, pts, backend="cryptography") == crypto.x25519_many(a, pts)
    if crypto._sodium() is not None:
        assert crypto.x25519_many(a, pts, backend="libsodium") == crypto.x25519_many(a, pts, backend="cryptography")
    assert crypto.ecdh_final(pts) == b"".join(pts[i : i + 16] for i in range(0, len(pts), 32))
    ab = crypto.ecdh_reencrypt(b, crypto.ecdh_reencrypt(a, pts))
    ba = crypto.ecdh_reencrypt(a, crypto.ecdh_reencrypt(b, pts))
    assert ab == ba
    with pytest.raises(crypto.CryptoError):
        crypto.x25519_many(a, bytes(32))  # the zero point has small order


def test_the_x25519_backend_is_the_faster_one_unless_fixed(monkeypatch):
    try:
        for forced in ("cryptography", "libsodium"):
            monkeypatch.setenv("FEDSITE_PSI_X25519", forced)
            crypto.x25519_backend.cache_clear()
            expected = forced if crypto._sodium() is not None else "cryptography"
            assert crypto.x25519_backend() == expected
        monkeypatch.delenv("FEDSITE_PSI_X25519")
        crypto.x25519_backend.cache_clear()
        assert crypto.x25519_backend() in ("libsodium", "cryptography")
    finally:
        crypto.x25519_backend.cache_clear()


def test_rsa_crt_blind_signature_equals_plain_signature():
    key = crypto.new_rsa_key(1024, 3)
    ids = ["a", "ü", "42"]
    own = crypto.rsa_sign_own(key, ids)
    blinded, unblind = crypto.rsa_blind(crypto.rsa_public(key), ids)
    sigs = crypto.rsa_sign_blinded(key, blinded)
    assert crypto.rsa_verify_sample(crypto.rsa_public(key), blinded, sigs)
    assert crypto.rsa_unblind(crypto.rsa_public(key), sigs, unblind) == own
    assert crypto.fedlearner_sign_own(key, ids) == own


# -- two runtimes ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ecdh", "rsa"])
def test_pair_unicode_and_numeric_ids(tmp_path, pki, protocol):
    left = ["1", "2", "3", "ünï", "日本", "a,b", 'q"t', "x y", "007", "only-left"]
    right = ["3", "2", "ünï", "日本", "a,b", 'q"t', "x y", "7", "007", "only-right", "1"]
    psi = {"protocol": protocol, "rsa_bits": 1024, "batch_size": 4}
    res = psi_pair(tmp_path, pki, left, right, psi, extra_left={"2": "0"}, extra_right={"3": "feat"})
    assert not isinstance(res["leader"], Exception), res
    assert not isinstance(res["follower"], Exception), res
    expected = set(left) & set(right)
    for role in ("leader", "follower"):
        s = res[role]
        assert s["engine"] == "builtin" and s["protocol"] == protocol
        assert s["intersection_size"] == len(expected)
        assert set(aligned_ids(tmp_path, role)) == expected
        stats = json.loads((tmp_path / role / "psi" / "stats.json").read_text())
        assert stats["intersection_size"] == len(expected)
        assert not (tmp_path / role / "psi" / "checkpoint").exists()
    assert aligned_ids(tmp_path, "leader") == aligned_ids(tmp_path, "follower")
    lead = read_csv(tmp_path / "leader" / "psi" / "aligned.csv")
    foll = read_csv(tmp_path / "follower" / "psi" / "aligned.csv")
    assert lead[0] == ["id", "label"] and foll[0] == ["uid", "f"]  # own columns only, id first
    assert ["2", "0"] in lead and ["3", "feat"] in foll
    assert s["input_size"] == len(right) and s["peer_input_size"] == len(left)


id_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), min_size=1, max_size=8
)
id_any = st.one_of(id_text, st.integers(-(10**12), 10**12).map(str))


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    common=st.sets(id_any, max_size=25),
    only_left=st.sets(id_any, max_size=20),
    only_right=st.sets(id_any, max_size=20),
    protocol=st.sampled_from(["ecdh", "rsa"]),
)
def test_exact_intersection_property(tmp_path_factory, pki, common, only_left, only_right, protocol):
    left = list(common | only_left)
    right = list(common | (only_right - only_left))
    if not left or not right:
        return
    tmp = tmp_path_factory.mktemp("prop")
    res = psi_pair(tmp, pki, left, right, {"protocol": protocol, "rsa_bits": 1024, "batch_size": 7})
    assert not isinstance(res["leader"], Exception), res
    assert not isinstance(res["follower"], Exception), res
    expected = set(left) & set(right)
    assert sorted(aligned_ids(tmp, "leader")) == sorted(expected)
    assert aligned_ids(tmp, "leader") == aligned_ids(tmp, "follower")


def test_process_pool_and_large_batches(tmp_path, pki):
    left = [str(i) for i in range(0, 3000)]
    right = [str(i) for i in range(2000, 4500)]
    res = psi_pair(tmp_path, pki, left, right, {"protocol": "ecdh", "workers": 2, "batch_size": 500})
    assert res["leader"]["intersection_size"] == 1000, res
    assert res["follower"]["intersection_size"] == 1000
    assert aligned_ids(tmp_path, "leader") == aligned_ids(tmp_path, "follower")


# -- bad input -------------------------------------------------------------------------


def test_duplicate_ids_fail_on_both_sides(tmp_path, pki):
    res = psi_pair(tmp_path, pki, ["a", "b", "a"], ["a", "b"], {"protocol": "ecdh"})
    assert isinstance(res["leader"], DataError) and "duplicate id 'a'" in str(res["leader"])
    assert isinstance(res["follower"], PeerError) and "duplicate id" in str(res["follower"])
    for role in ("leader", "follower"):
        assert not (tmp_path / role / "psi" / "aligned.csv").exists()
        assert not (tmp_path / role / "psi" / "stats.json").exists()


def test_empty_input_fails_on_both_sides(tmp_path, pki):
    res = psi_pair(tmp_path, pki, ["a", "b"], [], {"protocol": "ecdh"})
    assert isinstance(res["follower"], DataError) and "no rows" in str(res["follower"])
    assert isinstance(res["leader"], PeerError) and "no rows" in str(res["leader"])
    assert not (tmp_path / "leader" / "psi" / "stats.json").exists()


def test_protocol_mismatch_fails_on_both_sides(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id"], [["1"], ["2"]])
    b = write_csv(tmp_path / "b.csv", ["id"], [["2"], ["3"]])
    port = free_port()
    res = run_pair(
        make_cfg(tmp_path, pki, "leader", a, "id", port, {"protocol": "ecdh"}),
        make_cfg(tmp_path, pki, "follower", b, "id", port, {"protocol": "rsa"}),
    )
    for role in ("leader", "follower"):
        assert isinstance(res[role], PeerError), res
        assert "protocol mismatch" in str(res[role]) and "ecdh" in str(res[role]) and "rsa" in str(res[role])
        assert not (tmp_path / role / "psi" / "stats.json").exists()


def test_unpinned_certificate_is_refused(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id"], [["1"]])
    b = write_csv(tmp_path / "b.csv", ["id"], [["1"]])
    port = free_port()
    leader = make_cfg(tmp_path, pki, "leader", a, "id", port, {}, timeout_s=4)
    follower = make_cfg(tmp_path, pki, "follower", b, "id", port, {}, me=pki["mallory"], timeout_s=3)
    res = run_pair(leader, follower)
    assert isinstance(res["follower"], PeerError) and "could not reach the leader" in str(res["follower"])
    assert isinstance(res["leader"], PeerError) and "never connected" in str(res["leader"])


def test_bad_config_names_the_field(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id"], [["1"]])
    raw = make_cfg(tmp_path, pki, "leader", a, "id", free_port(), {"protocol": "md5"})
    with pytest.raises(ConfigError, match="psi.protocol"):
        run(parse_config(raw), Reporter(None))
    raw = make_cfg(tmp_path, pki, "leader", a, "missing", free_port(), {})
    with pytest.raises(DataError, match="data.id_column"):
        run(parse_config({**raw, "timeout_s": 0.5}), Reporter(None))


# -- real processes: disconnect and resume after SIGKILL --------------------------------


def _spawn(cfg: dict, path: Path) -> subprocess.Popen:
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [PY, "-m", "runtime", "psi", "--config", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_files(folder: Path, count: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if folder.is_dir() and len(list(folder.glob("*.bin"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no progress in {folder}")


def _big_inputs(tmp: Path) -> tuple[Path, Path, set[str]]:
    left = [f"user-{i}" for i in range(6000)]
    right = [f"user-{i}" for i in range(3000, 9000)]
    a = write_csv(tmp / "a.csv", ["id", "label"], [[x, "1"] for x in left])
    b = write_csv(tmp / "b.csv", ["id", "x"], [[x, "2"] for x in right])
    return a, b, set(left) & set(right)


def test_partner_killed_mid_run_fails_leader_without_output(tmp_path, pki):
    a, b, _ = _big_inputs(tmp_path)
    port = free_port()
    psi = {"protocol": "ecdh", "batch_size": 200}
    leader = _spawn(make_cfg(tmp_path, pki, "leader", a, "id", port, psi), tmp_path / "l.json")
    follower = _spawn(make_cfg(tmp_path, pki, "follower", b, "id", port, psi), tmp_path / "f.json")
    try:
        _wait_for_files(tmp_path / "follower" / "psi" / "checkpoint" / "own_final", 2)
        follower.send_signal(signal.SIGKILL)
        follower.wait(10)
        _, err = leader.communicate(timeout=60)
        assert leader.returncode == 1, err
        assert "disconnected" in err or "lost" in err
        assert not (tmp_path / "leader" / "psi" / "stats.json").exists()
        assert not (tmp_path / "leader" / "psi" / "aligned.csv").exists()
    finally:
        for p in (leader, follower):
            if p.poll() is None:
                p.kill()


def test_resume_after_sigkill(tmp_path, pki):
    a, b, expected = _big_inputs(tmp_path)
    port = free_port()
    psi = {"protocol": "ecdh", "batch_size": 200}
    lcfg, fcfg = (
        make_cfg(tmp_path, pki, "leader", a, "id", port, psi),
        make_cfg(tmp_path, pki, "follower", b, "id", port, psi),
    )
    leader, follower = _spawn(lcfg, tmp_path / "l.json"), _spawn(fcfg, tmp_path / "f.json")
    try:
        _wait_for_files(tmp_path / "follower" / "psi" / "checkpoint" / "peer_final", 6)
        leader.send_signal(signal.SIGKILL)
        follower.send_signal(signal.SIGKILL)
        leader.wait(10)
        follower.wait(10)
    finally:
        for p in (leader, follower):
            if p.poll() is None:
                p.kill()
    done_before = len(list((tmp_path / "follower" / "psi" / "checkpoint" / "peer_final").glob("*.bin")))
    assert done_before >= 6
    assert not (tmp_path / "follower" / "psi" / "stats.json").exists()
    leader, follower = _spawn(lcfg, tmp_path / "l.json"), _spawn(fcfg, tmp_path / "f.json")
    _, lerr = leader.communicate(timeout=90)
    _, ferr = follower.communicate(timeout=90)
    assert leader.returncode == 0, lerr
    assert follower.returncode == 0, ferr
    for role in ("leader", "follower"):
        stats = json.loads((tmp_path / role / "psi" / "stats.json").read_text())
        assert stats["resumed"] is True
        assert stats["intersection_size"] == len(expected)
        assert set(aligned_ids(tmp_path, role)) == expected
    assert aligned_ids(tmp_path, "leader") == aligned_ids(tmp_path, "follower")
    assert "resuming session" in lerr and "resuming session" in ferr


def test_crlf_bom_csv_and_parquet_inputs(tmp_path, pki):
    a = write_csv(tmp_path / "a.csv", ["id", "v"], [["1", "x"], ["2", "y"], ["3", "z"]], crlf=True)
    b = tmp_path / "b.csv"
    b.write_bytes("\ufeffid,w\r\n2,p\r\n3,q\r\n4,r\r\n".encode())
    port = free_port()
    res = run_pair(
        make_cfg(tmp_path, pki, "leader", a, "id", port, {}), make_cfg(tmp_path, pki, "follower", b, "id", port, {})
    )
    assert res["leader"]["intersection_size"] == 2, res
    assert read_csv(tmp_path / "follower" / "psi" / "aligned.csv") == [["id", "w"], ["2", "p"], ["3", "q"]]
    # Parquet: read with pyarrow where it imports; otherwise a clear error naming data.path.
    bad = tmp_path / "c.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="data.path"):
        run(
            parse_config({**make_cfg(tmp_path, pki, "leader", bad, "id", free_port(), {}), "timeout_s": 0.5}),
            Reporter(None),
        )


def test_bounded_memory_paths_spill_to_disk(tmp_path, pki, monkeypatch):
    """Past the in-memory limits the duplicate check and the join go bucket by bucket from disk."""
    from runtime.psi import common, data

    monkeypatch.setattr(data, "IN_MEMORY_IDS", 50)
    monkeypatch.setattr(common, "IN_MEMORY_VALUES", 100)
    left = [f"id{i}" for i in range(400)]
    right = [f"id{i}" for i in range(250, 700)]
    res = psi_pair(tmp_path / "ok", pki, left, right, {"batch_size": 64})
    assert res["leader"]["intersection_size"] == 150, res
    assert sorted(aligned_ids(tmp_path / "ok", "leader")) == sorted(set(left) & set(right))
    assert aligned_ids(tmp_path / "ok", "leader") == aligned_ids(tmp_path / "ok", "follower")
    assert not list((tmp_path / "ok" / "leader" / "psi").glob(".ids-spill*/*"))
    dup = psi_pair(tmp_path / "dup", pki, left + ["id7"], right, {"batch_size": 64})
    assert isinstance(dup["leader"], DataError) and "duplicate id 'id7'" in str(dup["leader"])
