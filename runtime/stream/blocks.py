"""Data blocks, manifests and checkpoints on disk: the durable half of exactly-once.

Layout under ``{output_dir}/stream/``::

    blocks/{seq:08d}.parquet   matched samples: example_id, event_time, this side's columns
    blocks/{seq:08d}.json      the manifest; exists only once the block is committed
    state/{seq:08d}.ckpt.json  the join state right after block seq (source offset, counters), and
                               whether it is a snapshot or a delta on the previous block's (``base``:
                               the snapshot it builds on)
    state/{seq:08d}.<part>.arrow   a snapshot's pending events, or a delta's events appended
                               (``<part>``) and removed (``<part>.removed``), Arrow IPC
    state/{seq:08d}.prepared.json  follower: block seq is prepared, awaiting the leader's decision
    state/key                  the job's HMAC key (agreed with the partner at the first session)

Every file is written to a temporary name, fsynced and renamed, so a reader (the
continual trainer polls ``blocks/*.json``) never sees half a file, and a block's
manifest is the last thing written: its rename is the commit point on that side.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from runtime.errors import DataError
from runtime.stream.sources import ID, TIME

MANIFEST_RE = re.compile(r"^(\d{8})\.json$")
SNAPSHOT_EVERY = 256  # blocks between full snapshots of the join state; the others save only what changed

# Test hook: called with a point name before and after each durable step (crash injection).
Fault = Callable[[str], None]


def id_digest(ids: list[str]) -> str:
    """SHA-256 hex over the ordered ids, each followed by a newline (UTF-8)."""
    h = hashlib.sha256()
    if ids:
        h.update(("\n".join(ids) + "\n").encode())
    return h.hexdigest()


def column_digest(col: pa.ChunkedArray | pa.Array) -> str:
    """``id_digest(col.to_pylist())`` hashed straight from Arrow buffers (no Python string per id)."""
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col])
    if col.null_count or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return id_digest(col.to_pylist())
    h = hashlib.sha256()
    width = np.int32 if pa.types.is_string(col.type) else np.int64
    for chunk in pc.binary_join_element_wise(col, pa.scalar("", col.type), pa.scalar("\n", col.type)).chunks:
        if not len(chunk):
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)
        start, end = int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])
        h.update(memoryview(chunk.buffers()[2])[start:end])
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlockStore:
    """One side's blocks, manifests and checkpoints."""

    def __init__(self, output_dir: str | Path, fault: Fault | None = None) -> None:
        self.root = Path(output_dir) / "stream"
        self.blocks = self.root / "blocks"
        self.state = self.root / "state"
        self.blocks.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self._fault = fault or (lambda point: None)
        self.base: int | None = None  # the snapshot the last checkpoint written or loaded builds on
        self.snapshot_every = SNAPSHOT_EVERY

    # -- writing ------------------------------------------------------------
    def _atomic(self, path: Path, write: Callable[[Path], object]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        self._fault(f"written {path.parent.name}/{path.name}")
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _json(self, path: Path, obj: Any) -> None:
        self._atomic(path, lambda p: p.write_text(json.dumps(obj, sort_keys=True), encoding="utf-8"))

    def write_block(self, seq: int, table: pa.Table) -> None:
        self._atomic(self.blocks / f"{seq:08d}.parquet", lambda p: pq.write_table(table, p))

    def wants_snapshot(self, seq: int) -> bool:
        """Whether block ``seq``'s checkpoint is a full snapshot (else a delta on the previous block's)."""
        return self.base is None or seq - self.base >= self.snapshot_every

    def write_checkpoint(self, seq: int, meta: dict[str, Any], parts: dict[str, pa.Table]) -> None:
        base = seq if meta.get("full", True) else self.base
        assert base is not None, "a delta needs an earlier snapshot"
        for name, table in parts.items():
            self._atomic(self.state / f"{seq:08d}.{name}.arrow", functools.partial(_write_ipc, table=table))
        self._json(self.state / f"{seq:08d}.ckpt.json", {**meta, "base": base, "parts": sorted(parts)})
        self.base = base

    def mark_prepared(self, seq: int, manifest: dict[str, Any]) -> None:
        self._json(self.state / f"{seq:08d}.prepared.json", manifest)

    def commit(self, seq: int, manifest: dict[str, Any]) -> None:
        """Write the manifest (the commit point), then forget the prepare record and old checkpoints."""
        self._json(self.blocks / f"{seq:08d}.json", {**manifest, "committed": True})
        (self.state / f"{seq:08d}.prepared.json").unlink(missing_ok=True)
        self._prune(seq)

    def abort(self, seq: int) -> None:
        """Forget a prepared block the leader did not commit (its checkpoint and data go too)."""
        (self.state / f"{seq:08d}.prepared.json").unlink(missing_ok=True)
        for p in self.state.glob(f"{seq:08d}.*"):
            p.unlink(missing_ok=True)
        (self.blocks / f"{seq:08d}.parquet").unlink(missing_ok=True)

    def _prune(self, seq: int) -> None:
        """Drop the state files no committed block needs any more: those before this block's snapshot."""
        try:
            base = int(self._ckpt_meta(seq).get("base", seq))
        except DataError:
            return
        for p in self.state.iterdir():
            m = re.match(r"^(\d{8})\.", p.name)
            if m and int(m.group(1)) < base:
                p.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------
    def last_committed(self) -> tuple[int, dict[str, Any] | None]:
        """The highest committed block and its manifest (0, None: none yet)."""
        seqs = [int(m.group(1)) for p in self.blocks.iterdir() if (m := MANIFEST_RE.match(p.name))]
        if not seqs:
            return 0, None
        seq = max(seqs)
        return seq, self.manifest(seq)

    def manifest(self, seq: int) -> dict[str, Any]:
        path = self.blocks / f"{seq:08d}.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"stream: cannot read the manifest {path}: {exc}") from None

    def prepared(self, after: int) -> tuple[int, dict[str, Any]] | None:
        """A block prepared after ``after`` and not committed (the follower's in-doubt block)."""
        found = []
        for p in self.state.glob("*.prepared.json"):
            seq = int(p.name[:8])
            if seq > after:
                found.append((seq, json.loads(p.read_text(encoding="utf-8"))))
            else:
                p.unlink(missing_ok=True)  # committed already: a leftover of a crash after the manifest
        return max(found, key=lambda x: x[0]) if found else None

    def _ckpt_meta(self, seq: int) -> dict[str, Any]:
        path = self.state / f"{seq:08d}.ckpt.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                f"stream: block {seq} is committed but its checkpoint {path} is unreadable: {exc}"
            ) from None

    def _parts(self, seq: int, meta: dict[str, Any]) -> dict[str, pa.Table]:
        parts = {}
        for name in meta.get("parts", []):
            path = self.state / f"{seq:08d}.{name}.arrow"
            try:
                with ipc.open_file(path) as reader:
                    parts[name] = reader.read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(f"stream: block {seq}'s checkpoint part {path} is unreadable: {exc}") from None
        return parts

    def load_checkpoint(self, seq: int) -> dict[str, Any] | None:
        """The join state saved with block ``seq`` (None for seq 0: start from scratch):
        ``meta`` (block seq's), ``snapshot`` and ``snapshot_meta`` (the snapshot it builds on), and
        ``deltas`` (each later block's meta and parts, in order, up to seq)."""
        if seq == 0:
            self.base = None
            return None
        meta = self._ckpt_meta(seq)
        base = int(meta.get("base", seq))  # checkpoints written before deltas existed are snapshots
        base_meta = meta if base == seq else self._ckpt_meta(base)
        deltas = []
        for s in range(base + 1, seq + 1):
            m = meta if s == seq else self._ckpt_meta(s)
            deltas.append((m, self._parts(s, m)))
        self.base = base
        return {"meta": meta, "snapshot": self._parts(base, base_meta), "snapshot_meta": base_meta, "deltas": deltas}

    def read_block(self, seq: int) -> pa.Table:
        return pq.read_table(self.blocks / f"{seq:08d}.parquet")

    # -- the job key ----------------------------------------------------------
    def load_key(self) -> bytes | None:
        path = self.state / "key"
        return path.read_bytes() if path.exists() else None

    def save_key(self, key: bytes) -> None:
        def write(p: Path) -> None:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)

        self._atomic(self.state / "key", write)


def _write_ipc(path: Path, table: pa.Table) -> None:
    with ipc.new_file(path, table.schema) as writer:
        writer.write_table(table)


def manifest_for(seq: int, table: pa.Table, offset: Any) -> dict[str, Any]:
    """The manifest of a block (without ``committed``, added at commit)."""
    times = table.column(TIME).to_numpy()
    return {
        "seq": seq,
        "count": table.num_rows,
        "id_digest": column_digest(table.column(ID)),
        "event_time_min": float(times.min()) if len(times) else None,
        "event_time_max": float(times.max()) if len(times) else None,
        "source_offset": offset,
    }
