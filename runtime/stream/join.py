"""The join's state on each side, with no I/O: what a round does to it.

A match is the same example id on both sides with event times at most
``max_delay`` apart (ids are unique per side; a repeated id is counted in
``duplicate_events`` and joins at most once). Matches are emitted as soon as both
halves have arrived; watermarks only decide when a waiting event can no longer
match:

- each side's watermark is the newest event time it has read minus ``lateness``;
  an event older than its own side's watermark when read is *late* (counted);
- a leader event with time ``t`` waits until the follower's watermark passes
  ``t + max_delay`` (every follower event that could match it has then been read,
  unless late), and a follower event likewise waits for the leader's watermark.

For events that are not late, the matched set is therefore exactly the batch join,
whatever the batching and timing of the two sources (docs/streaming.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from runtime.stream.sources import ID, TIME, EventBatch

KEY = "_key"
AUX = "_aux"
PTIME = "_time"
GID = "_gid"  # an event's serial number in its Pending (never reused): how deltas name events
ALIVE = "_alive"
NEG_INF = float("-inf")


def keyed_hashes(key: bytes, ids: list[str]) -> np.ndarray:
    """HMAC-SHA256 of each id under the job key, truncated to 64 bits (uint64).

    Computed as RFC 2104 spells it, with the key's inner and outer pads hashed once
    per batch and copied per id: the same digests as ``hmac.digest``, at under half
    the cost per id (tests/runtime/test_stream.py checks the equality).
    """
    block = key if len(key) <= 64 else hashlib.sha256(key).digest()
    block = block.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block)).copy
    out: list[bytes] = []
    put = out.append
    for s in ids:
        i = inner()
        i.update(s.encode())
        o = outer()
        o.update(i.digest())
        put(o.digest()[:8])
    return np.frombuffer(b"".join(out), dtype="<u8").copy()


def late_mask(times: np.ndarray, max_before: float, lateness: float) -> np.ndarray:
    """Which events (in read order) are older than their side's watermark when read."""
    if not len(times):
        return np.zeros(0, dtype=bool)
    running = np.maximum.accumulate(np.concatenate([[max_before], times[:-1]]))
    return times < running - lateness


class Pending:
    """Events waiting for a partner: optional rows, keys, times, an int64 tag; lazily deleted.

    Every event gets a serial number (gid) when appended. What changed since the last
    checkpoint (events appended, events removed) is kept, so a checkpoint can be a small
    delta instead of the whole pending state (``snapshot``/``delta``, ``restore``/``apply``).
    """

    def __init__(self, *, by_key: bool) -> None:
        self.table: pa.Table | None = None
        self.keys = np.zeros(0, dtype=np.uint64)
        self.times = np.zeros(0, dtype=np.float64)
        self.aux = np.zeros(0, dtype=np.int64)
        self.gid = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        self.by_key = by_key
        self.index: dict[int, int] = {}
        self.dead = 0
        self.next_gid = 0
        self.mark = 0  # events with gid >= mark were appended since the last checkpoint
        self.removed: list[np.ndarray] = []  # gids (< mark) removed since the last checkpoint

    def __len__(self) -> int:
        return int(self.alive.sum())

    def _extend(
        self,
        table: pa.Table | None,
        keys: np.ndarray,
        times: np.ndarray,
        aux: np.ndarray,
        gids: np.ndarray,
        alive: np.ndarray,
    ) -> int:
        start = len(self.keys)
        if table is not None:
            self.table = (
                table if self.table is None else pa.concat_tables([self.table, table], promote_options="permissive")
            )
        self.keys = np.concatenate([self.keys, keys.astype(np.uint64)])
        self.times = np.concatenate([self.times, times.astype(np.float64)])
        self.aux = np.concatenate([self.aux, aux.astype(np.int64)])
        self.gid = np.concatenate([self.gid, gids.astype(np.int64)])
        self.alive = np.concatenate([self.alive, alive])
        if len(gids):
            self.next_gid = max(self.next_gid, int(gids[-1]) + 1)
        return start

    def append(self, table: pa.Table | None, keys: np.ndarray, times: np.ndarray, aux: np.ndarray) -> tuple[int, int]:
        """Add events; return (first index, duplicates skipped)."""
        start = len(self.keys)
        alive = np.ones(len(keys), dtype=bool)
        dups = 0
        if self.by_key:
            index = self.index
            klist = keys.tolist()
            fresh = dict(zip(klist, range(start, start + len(klist)), strict=True))
            if len(fresh) == len(klist) and index.keys().isdisjoint(fresh):
                index.update(fresh)  # the common case: no repeated id, in one C-level pass
                klist = []
            for i, k in enumerate(klist, start):
                if k in index:
                    alive[i - start] = False
                    dups += 1
                else:
                    index[k] = i
        gids = np.arange(self.next_gid, self.next_gid + len(keys), dtype=np.int64)
        self._extend(table, keys, times, aux, gids, alive)
        self.dead += dups
        return start, dups

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        return np.array(list(map(self.index.get, keys.tolist(), repeat(-1))), dtype=np.int64).reshape(-1)

    def kill(self, idx: np.ndarray) -> None:
        if not len(idx):
            return
        self.alive[idx] = False
        self.dead += len(idx)
        gids = self.gid[idx]
        self.removed.append(gids[gids < self.mark])
        if self.by_key:
            list(map(self.index.pop, self.keys[idx].tolist(), repeat(None)))

    def by_aux(self, aux: np.ndarray) -> np.ndarray:
        """Indices of live events with these tags (tags ascend with the index)."""
        idx = np.searchsorted(self.aux, aux)
        if len(aux) and (
            idx.max() >= len(self.aux) or not np.array_equal(self.aux[idx], aux) or not self.alive[idx].all()
        ):
            raise ValueError("unknown or already used sequence numbers")
        return idx

    def evict_before(self, cutoff: float) -> int:
        """Drop live events older than ``cutoff`` (they can no longer match); return how many."""
        if cutoff == NEG_INF:
            return 0
        idx = np.flatnonzero(self.alive & (self.times < cutoff))
        self.kill(idx)
        self._maybe_compact()
        return len(idx)

    def take(self, idx: np.ndarray) -> pa.Table:
        assert self.table is not None
        return self.table.take(pa.array(idx, type=pa.int64()))

    def _maybe_compact(self) -> None:
        if self.dead < 50_000 or self.dead * 2 < len(self.keys):
            return
        keep = self.alive
        if self.table is not None:
            self.table = self.table.filter(pa.array(keep)).combine_chunks()
        self.keys, self.times, self.aux, self.gid = self.keys[keep], self.times[keep], self.aux[keep], self.gid[keep]
        self.alive = np.ones(len(self.keys), dtype=bool)
        self.dead = 0
        if self.by_key:
            self.index = {k: i for i, k in enumerate(self.keys.tolist())}

    # -- checkpoints ----------------------------------------------------------
    def _rows(self, select: np.ndarray, *, with_alive: bool) -> pa.Table:
        sel = pa.array(select, type=pa.int64())
        extra = {
            KEY: pa.array(self.keys[select], type=pa.uint64()),
            PTIME: pa.array(self.times[select], type=pa.float64()),
            AUX: pa.array(self.aux[select], type=pa.int64()),
            GID: pa.array(self.gid[select], type=pa.int64()),
        }
        if with_alive:
            extra[ALIVE] = pa.array(self.alive[select], type=pa.bool_())
        t = pa.table(extra) if self.table is None else self.table.take(sel)
        if self.table is not None:
            for name, col in extra.items():
                t = t.append_column(name, col)
        return t

    def _reset_journal(self) -> None:
        self.mark = self.next_gid
        self.removed = []

    def snapshot(self) -> pa.Table:
        """The whole pending state (live events); the next delta starts here."""
        t = self._rows(np.flatnonzero(self.alive), with_alive=False)
        self._reset_journal()
        return t

    def delta(self) -> tuple[pa.Table, pa.Table]:
        """What changed since the last snapshot or delta: events appended (with whether they are still
        live) and the gids of earlier events removed. The next delta starts here."""
        added = self._rows(np.arange(np.searchsorted(self.gid, self.mark), len(self.gid)), with_alive=True)
        removed = np.concatenate(self.removed) if self.removed else np.zeros(0, dtype=np.int64)
        self._reset_journal()
        return added, pa.table({GID: pa.array(removed, type=pa.int64())})

    @staticmethod
    def _columns(table: pa.Table) -> tuple[pa.Table | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        keys = table.column(KEY).to_numpy().astype(np.uint64)
        times = table.column(PTIME).to_numpy().astype(np.float64)
        aux = table.column(AUX).to_numpy().astype(np.int64)
        gids = (
            table.column(GID).to_numpy().astype(np.int64)
            if GID in table.column_names
            else np.arange(len(keys), dtype=np.int64)  # a checkpoint written before gids existed
        )
        rows = table.drop_columns([c for c in (KEY, PTIME, AUX, GID, ALIVE) if c in table.column_names])
        return (rows if rows.num_columns else None), keys, times, aux, gids

    @classmethod
    def restore(cls, table: pa.Table, *, by_key: bool, next_gid: int = 0) -> Pending:
        p = cls(by_key=by_key)
        rows, keys, times, aux, gids = cls._columns(table)
        p._extend(rows, keys, times, aux, gids, np.ones(len(keys), dtype=bool))
        if by_key:
            p.index = {k: i for i, k in enumerate(keys.tolist())}
        p.next_gid = max(p.next_gid, next_gid)
        p._reset_journal()
        return p

    def apply(self, added: pa.Table, removed: pa.Table, next_gid: int = 0) -> None:
        """Replay one delta (as written by ``delta``) on the state it was taken after."""
        gone = removed.column(GID).to_numpy().astype(np.int64)
        if len(gone):
            idx = np.searchsorted(self.gid, gone)
            ok = idx < len(self.gid)
            ok[ok] = self.gid[idx[ok]] == gone[ok]
            idx = idx[ok]
            self.kill(idx[self.alive[idx]])
        rows, keys, times, aux, gids = self._columns(added)
        alive = added.column(ALIVE).to_numpy(zero_copy_only=False).astype(bool)
        start = self._extend(rows, keys, times, aux, gids, alive)
        self.dead += int((~alive).sum())
        if self.by_key:
            self.index.update(zip(keys[alive].tolist(), (np.flatnonzero(alive) + start).tolist(), strict=True))
        self.next_gid = max(self.next_gid, next_gid)
        self._reset_journal()


class _Side:
    def __init__(self, key: bytes, max_delay: float, lateness: float) -> None:
        self.key = key
        self.max_delay = max_delay
        self.lateness = lateness
        self.max_time = NEG_INF
        self.counters = {
            "events_read": 0,
            "late_events": 0,
            "matched": 0,
            "expired": 0,
            "duplicate_events": 0,
            "watermark_follows": 0,  # rounds in which this side's idle source let its watermark follow the partner's
        }

    @property
    def watermark(self) -> float:
        return self.max_time - self.lateness

    def follow(self, partner_watermark: float) -> bool:
        """This side's source is idle: let its watermark follow the partner's (never back).

        An idle source must not hold the other side's events forever (like an idle source in
        Flink, it stops counting in the watermark). Events it delivers later that are older
        than the watermark it reached are counted as late, like any late event.
        """
        if partner_watermark == NEG_INF or partner_watermark <= self.watermark:
            return False
        self.max_time = partner_watermark + self.lateness
        self.counters["watermark_follows"] += 1
        return True

    def _read(self, batch: EventBatch) -> tuple[np.ndarray, int]:
        times = batch.times.astype(np.float64)
        late = int(late_mask(times, self.max_time, self.lateness).sum())
        self.counters["events_read"] += len(times)
        self.counters["late_events"] += late
        if len(times):
            self.max_time = max(self.max_time, float(times.max()))
        return times, late

    def meta(self) -> dict[str, Any]:
        return {"max_time": None if self.max_time == NEG_INF else self.max_time, "counters": dict(self.counters)}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.max_time = NEG_INF if meta.get("max_time") is None else float(meta["max_time"])
        self.counters.update(meta.get("counters", {}))

    # -- checkpoints: a snapshot, or a delta on the previous checkpoint ------------
    PARTS: dict[str, bool] = {}  # pending part name -> whether it is indexed by key

    def pendings(self) -> dict[str, Pending]:
        raise NotImplementedError

    def set_pendings(self, parts: dict[str, Pending]) -> None:
        raise NotImplementedError

    def extra_meta(self) -> dict[str, Any]:
        return {}

    def checkpoint(self, *, full: bool) -> tuple[dict[str, Any], dict[str, pa.Table]]:
        """The state to save with a block: every pending event (``full``), or what changed since the last one."""
        parts: dict[str, pa.Table] = {}
        for name, pending in self.pendings().items():
            if full:
                parts[name] = pending.snapshot()
            else:
                parts[name], parts[f"{name}.removed"] = pending.delta()
        gids = {name: pending.next_gid for name, pending in self.pendings().items()}
        return {**self.meta(), **self.extra_meta(), "gids": gids, "full": full}, parts

    def restore(
        self,
        meta: dict[str, Any],
        snapshot: dict[str, pa.Table],
        deltas: Sequence[tuple[dict[str, Any], dict[str, pa.Table]]] = (),
        snapshot_meta: dict[str, Any] | None = None,
    ) -> None:
        """The state after a block: its snapshot, then the deltas after it in order; ``meta`` is the block's own."""
        self._restore_meta(meta)
        base_gids = (snapshot_meta or meta).get("gids", {})
        pendings = {
            name: Pending.restore(snapshot[name], by_key=by_key, next_gid=int(base_gids.get(name, 0)))
            for name, by_key in self.PARTS.items()
        }
        for dmeta, dparts in deltas:
            for name, pending in pendings.items():
                pending.apply(dparts[name], dparts[f"{name}.removed"], int(dmeta.get("gids", {}).get(name, 0)))
        self.set_pendings(pendings)


class LeaderJoin(_Side):
    """The leader's pending events, numbered by leader sequence numbers (lsn) in event-time order."""

    def __init__(self, key: bytes, max_delay: float, lateness: float) -> None:
        super().__init__(key, max_delay, lateness)
        self.next_lsn = 1
        self.pending = Pending(by_key=False)

    def add(self, batch: EventBatch | None) -> tuple[int, np.ndarray, np.ndarray, int]:
        """Take new events: return (first lsn, keys, times) in event-time order, and how many were late."""
        first = self.next_lsn
        if batch is None or not len(batch):
            return first, np.zeros(0, dtype=np.uint64), np.zeros(0), 0
        times, late = self._read(batch)
        order = np.argsort(times, kind="stable")
        table = batch.table.take(pa.array(order, type=pa.int64()))
        times = times[order]
        keys = keyed_hashes(self.key, table.column(ID).to_pylist())
        lsns = np.arange(first, first + len(times), dtype=np.int64)
        self.pending.append(table, keys, times, lsns)
        self.next_lsn += len(times)
        return first, keys, times, late

    def matched(self, lsns: np.ndarray) -> pa.Table:
        """The block's rows (in the given lsn order), removed from the pending events."""
        idx = self.pending.by_aux(lsns)
        rows = self.pending.take(idx)
        self.pending.kill(idx)
        self.counters["matched"] += len(lsns)
        return rows

    def expire(self, follower_watermark: float) -> int:
        n = self.pending.evict_before(follower_watermark - self.max_delay)
        self.counters["expired"] += n
        return n

    PARTS = {"leader": False}

    def pendings(self) -> dict[str, Pending]:
        return {"leader": self.pending}

    def set_pendings(self, parts: dict[str, Pending]) -> None:
        self.pending = parts["leader"]

    def extra_meta(self) -> dict[str, Any]:
        return {"next_lsn": self.next_lsn}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        super()._restore_meta(meta)
        self.next_lsn = int(meta["next_lsn"])


class FollowerJoin(_Side):
    """The follower's own pending events, and the leader's pending keyed hashes."""

    def __init__(self, key: bytes, max_delay: float, lateness: float) -> None:
        super().__init__(key, max_delay, lateness)
        self.own = Pending(by_key=True)  # this side's events (rows), tag unused
        self.theirs = Pending(by_key=True)  # the leader's hashes and times, tag = lsn

    def round(
        self, batch: EventBatch | None, keys: np.ndarray, times: np.ndarray, first_lsn: int, leader_watermark: float
    ) -> tuple[np.ndarray, pa.Table]:
        """One round: this side's new events and the leader's; return matched lsns (ascending) and our rows."""
        d = self.max_delay
        new_own = np.zeros(0, dtype=np.int64)
        if batch is not None and len(batch):
            own_times, _ = self._read(batch)
            own_keys = keyed_hashes(self.key, batch.table.column(ID).to_pylist())
            start, dups = self.own.append(batch.table, own_keys, own_times, np.zeros(len(own_times), dtype=np.int64))
            self.counters["duplicate_events"] += dups
            new_own = np.arange(start, start + len(own_times), dtype=np.int64)
        lsns = np.arange(first_lsn, first_lsn + len(keys), dtype=np.int64)
        # the leader's new events against all of ours
        fi = self.own.lookup(keys)
        ok = fi >= 0
        ok[ok] = np.abs(times[ok] - self.own.times[fi[ok]]) <= d
        m_lsn, m_own = [lsns[ok]], [fi[ok]]
        self.own.kill(fi[ok])
        _, dups = self.theirs.append(None, keys[~ok], times[~ok], lsns[~ok])
        self.counters["duplicate_events"] += dups
        # our new events against the leader's earlier ones
        new_own = new_own[self.own.alive[new_own]]
        if len(new_own):
            li = self.theirs.lookup(self.own.keys[new_own])
            ok2 = li >= 0
            ok2[ok2] = np.abs(self.own.times[new_own[ok2]] - self.theirs.times[li[ok2]]) <= d
            m_lsn.append(self.theirs.aux[li[ok2]])
            m_own.append(new_own[ok2])
            self.theirs.kill(li[ok2])
            self.own.kill(new_own[ok2])
        all_lsn, all_own = np.concatenate(m_lsn), np.concatenate(m_own)
        order = np.argsort(all_lsn, kind="stable")
        all_lsn, all_own = all_lsn[order], all_own[order]
        rows = self.own.take(all_own) if len(all_own) else None
        self.counters["matched"] += len(all_lsn)
        # what can no longer match
        self.counters["expired"] += self.own.evict_before(leader_watermark - d)
        self.theirs.evict_before(self.watermark - d)
        return all_lsn, rows if rows is not None else pa.table(
            {ID: pa.array([], pa.string()), TIME: pa.array([], pa.float64())}
        )

    PARTS = {"own": True, "theirs": True}

    def pendings(self) -> dict[str, Pending]:
        return {"own": self.own, "theirs": self.theirs}

    def set_pendings(self, parts: dict[str, Pending]) -> None:
        self.own, self.theirs = parts["own"], parts["theirs"]
