"""What every PSI engine shares: parameters, the output folder, checkpoints, the intersection."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError
from runtime.psi.data import BucketSpill, atomic_write_bytes, atomic_write_json
from runtime.psi.h2c import SUITE_NU, SUITE_RO

PROTOCOLS = ("ecdh", "rsa", "rr22", "kkrt", "auto")
ENGINES = ("auto", "builtin", "libpsi")
H2C = {"nu": SUITE_NU, "ro": SUITE_RO}


@dataclass(frozen=True)
class PsiParams:
    protocol: str = "ecdh"
    engine: str = "auto"
    batch_size: int = 8192
    workers: int = 0  # 0 = compute in this process (tests); default: cpu count
    rsa_bits: int = 2048
    rsa_primes: int = 3
    hash_to_curve: str = "nu"
    link_port: int = 0  # libpsi engine, leader: the link's port (0 = a free port, announced in Hello)
    bucket_size: int = 1 << 20  # libpsi engine, RR22/KKRT: ids per bucket (libpsi's default; both sides must agree)

    @property
    def suite(self) -> str:
        if self.protocol in ("rr22", "kkrt", "auto") or self.engine == "libpsi":
            return f"{self.engine}-{self.protocol}"
        if self.protocol == "rsa":
            return f"rsa-{self.rsa_bits}-{self.rsa_primes}p-fdh-shake256"
        return H2C[self.hash_to_curve]


def parse_params(raw: dict[str, Any]) -> PsiParams:
    """Validate ``cfg.psi``; ConfigError names the field."""
    known = {
        "protocol",
        "engine",
        "batch_size",
        "workers",
        "rsa_bits",
        "rsa_primes",
        "hash_to_curve",
        "link_port",
        "bucket_size",
    }
    for key in raw:
        if key not in known:
            raise ConfigError(f"psi.{key}: unknown parameter (known: {', '.join(sorted(known))})")
    protocol = raw.get("protocol", "ecdh")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"psi.protocol: must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    engine = raw.get("engine", "auto")
    if engine not in ENGINES:
        raise ConfigError(f"psi.engine: must be one of {', '.join(ENGINES)}, got {engine!r}")

    def _int(key: str, default: int, lo: int, hi: int) -> int:
        v = raw.get(key, default)
        if v is None:
            v = default
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"psi.{key}: must be an integer in [{lo}, {hi}], got {v!r}")
        return v

    h2c = raw.get("hash_to_curve", "nu")
    if h2c not in H2C:
        raise ConfigError(f"psi.hash_to_curve: must be 'nu' or 'ro', got {h2c!r}")
    rsa_bits = _int("rsa_bits", 2048, 1024, 8192)
    rsa_primes = _int("rsa_primes", 3, 2, 3 if rsa_bits < 4096 else 4)
    return PsiParams(
        protocol=protocol,
        engine=engine,
        batch_size=_int("batch_size", 8192, 1, 1_000_000),
        workers=_int("workers", os.cpu_count() or 1, 0, 256),
        rsa_bits=rsa_bits,
        rsa_primes=rsa_primes,
        hash_to_curve=h2c,
        link_port=_int("link_port", 0, 0, 65535),
        bucket_size=_int("bucket_size", 1 << 20, 1 << 10, 1 << 24),
    )


class Output:
    """``{output_dir}/psi/``: aligned.csv and stats.json (written last), checkpoint/ while running."""

    def __init__(self, cfg: JobConfig) -> None:
        self.root = Path(cfg.output_dir) / "psi"
        self.aligned = self.root / "aligned.csv"
        self.stats = self.root / "stats.json"
        self.ckpt = Checkpoint(self.root / "checkpoint")

    def clear_results(self) -> None:
        """A new run: remove results of an earlier run so they cannot be mistaken for this one's."""
        self.stats.unlink(missing_ok=True)
        self.aligned.unlink(missing_ok=True)

    def write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write_json(self.stats, stats)


class Checkpoint:
    """Per-batch files written atomically; ``state.json`` ties them to one session and one key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / "state.json").read_text())
        except (OSError, ValueError):
            return None

    def reset(self, state: dict[str, Any]) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.save(state)

    def save(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.root / "state.json", state)
        os.chmod(self.root / "state.json", 0o600)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _path(self, kind: str, index: int) -> Path:
        return self.root / kind / f"{index:08d}.bin"

    def has(self, kind: str, index: int) -> bool:
        return self._path(kind, index).exists()

    def indices(self, kind: str) -> list[int]:
        d = self.root / kind
        if not d.is_dir():
            return []
        return sorted(int(p.stem) for p in d.glob("*.bin"))

    def write(self, kind: str, index: int, data: bytes) -> None:
        atomic_write_bytes(self._path(kind, index), data)

    def read(self, kind: str, index: int) -> bytes:
        return self._path(kind, index).read_bytes()


def batch_count(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def batch_len(n: int, batch_size: int, index: int) -> int:
    return min(batch_size, n - index * batch_size)


def _join(own: bytes, peer: bytes, width: int) -> tuple[np.ndarray, bytes]:
    """Positions in `own` of values also in `peer`, in value order, and those values concatenated."""
    k = width // 8
    ka = np.frombuffer(own, dtype=">u8").reshape(-1, k)
    kb = np.frombuffer(peer, dtype=">u8").reshape(-1, k)
    if not len(ka) or not len(kb):
        return np.zeros(0, dtype=np.int64), b""
    # Compare as big-endian 64-bit words (exact; the same order as the bytes).
    sa = np.lexsort(ka.T[::-1])
    sb = np.lexsort(kb.T[::-1])
    fields = [(f"f{i}", ">u8") for i in range(k)]
    va = np.ascontiguousarray(ka[sa]).view(fields).ravel()
    vb = np.ascontiguousarray(kb[sb]).view(fields).ravel()
    pos = np.searchsorted(vb, va)
    hit = (pos < len(vb)) & (vb[np.minimum(pos, len(vb) - 1)] == va)
    return sa[hit].astype(np.int64), va[hit].tobytes()


def intersect(own: bytes, peer: bytes, width: int) -> tuple[np.ndarray, bytes]:
    """Rows of `own` whose value is among `peer`'s, ordered by value; and a SHA-256 of those values in order.

    Both sides hold the same final values for the common ids, so the digest lets
    them check they found the same intersection without showing it.
    """
    rows, hits = _join(own, peer, width)
    return rows, hashlib.sha256(hits).digest()


IN_MEMORY_VALUES = 4_000_000  # own + peer values; beyond, the join runs bucket by bucket from disk


def intersect_parts(
    own_parts: Iterable[bytes], peer_parts: Iterable[bytes], n_total: int, width: int, spill_dir: Path
) -> tuple[np.ndarray, bytes]:
    """``intersect`` over batches, with memory bounded by a bucket (plus the intersection) for large inputs.

    Buckets are value prefixes, so joining them in bucket order yields the global value order.
    """
    if n_total <= IN_MEMORY_VALUES:
        return intersect(b"".join(own_parts), b"".join(peer_parts), width)
    bits = min(8, max(1, math.ceil(math.log2(n_total / (IN_MEMORY_VALUES / 2)))))
    shift = np.uint8(8 - bits)
    rec = np.dtype([("v", f"V{width}"), ("row", "<i8")])
    own_sp, peer_sp = BucketSpill(spill_dir / "own", bits), BucketSpill(spill_dir / "peer", bits)
    try:
        row0 = 0
        for part in own_parts:
            m = len(part) // width
            r = np.empty(m, dtype=rec)
            r["v"] = np.frombuffer(part, dtype=f"V{width}")
            r["row"] = np.arange(row0, row0 + m)
            row0 += m
            own_sp.add((np.frombuffer(part, dtype=np.uint8)[::width] >> shift).astype(np.int64), r)
        for part in peer_parts:
            peer_sp.add(
                (np.frombuffer(part, dtype=np.uint8)[::width] >> shift).astype(np.int64),
                np.frombuffer(part, dtype=f"V{width}"),
            )
        rows, digest = [], hashlib.sha256()
        for b in range(1 << bits):
            recs = np.frombuffer(own_sp.read(b), dtype=rec)
            local, hits = _join(recs["v"].tobytes(), peer_sp.read(b), width)
            rows.append(recs["row"][local])
            digest.update(hits)
        return (np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)), digest.digest()
    finally:
        own_sp.close()
        peer_sp.close()


def check_unique_values(values: bytes, width: int, what: str) -> None:
    """Two different ids with equal final values mean a duplicate id or a broken peer."""
    a = np.frombuffer(values, dtype=f"V{width}")
    if len(np.unique(a)) != len(a):
        raise DataError(f"{what}: two ids have the same PSI value (duplicate id)")


def capabilities(params: PsiParams, libpsi_ok: bool) -> list[str]:
    """The "engine/protocol" pairs this side can run for the requested parameters."""
    caps = []
    if params.engine in ("auto", "libpsi") and libpsi_ok:
        caps += ["libpsi/rr22", "libpsi/kkrt", "libpsi/ecdh"]
    if params.engine in ("auto", "builtin"):
        caps += ["builtin/ecdh", "builtin/rsa"]
    return caps


def preference(params: PsiParams) -> list[str]:
    """The leader's order of choice; the first pair both sides can run wins."""
    p, e = params.protocol, params.engine
    if p == "auto":
        return ["libpsi/rr22", "libpsi/kkrt", "libpsi/ecdh", "builtin/ecdh"]
    if p in ("rr22", "kkrt"):
        return [f"libpsi/{p}"] + (["builtin/ecdh"] if e == "auto" else [])
    if e == "libpsi":
        return [f"libpsi/{p}"] if p == "ecdh" else []
    return [f"builtin/{p}"]


def choose(params: PsiParams, mine: list[str], theirs: list[str]) -> str | None:
    for cand in preference(params):
        if cand in mine and cand in theirs:
            return cand
    return None
