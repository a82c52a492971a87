"""``python -m runtime stream_join``: join two live event sources into data blocks, exactly once.

The job runs until either side stops it (SIGTERM, the optional stop file, or both
sources idle for ``stream.stop_when_idle_s``). A session is one connection between
the runtimes; when it breaks (the partner was killed, the network went away) the
survivor goes back to its last committed block and waits for the partner to come
back, and the restarted partner resumes from the same block: see docs/streaming.md.

Per round the leader reads its new events and sends their keyed hashes and times
(:class:`JoinQuery`); the follower reads its own, matches, durably *prepares* the
round's block and answers with the matched leader sequence numbers and the block's
id digest (:class:`JoinAnswer`); the leader checks the digest, writes its block and
manifest (the commit decision) and sends :class:`BlockCommit`; the follower then
writes its manifest. Either side killed at any point resumes without losing or
duplicating a sample.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsite_proto.runtime.v1 import stream_pb2 as pb
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError
from runtime.report import Reporter
from runtime.stream.blocks import BlockStore, manifest_for
from runtime.stream.join import NEG_INF, FollowerJoin, LeaderJoin
from runtime.stream.link import PROTOCOL_VERSION, LinkLost, PartnerDone, StreamFollowerLink, StreamLeaderLink
from runtime.stream.params import StreamParams, parse_stream_params
from runtime.stream.sources import Columns, EventBatch, Source, open_source

STAGE = "stream join"
WAITING = "waiting for data"
KEY_CHECK = b"fedsite stream key check"
STATS_EVERY_S = 1.0

# Test hook: called as FAULT(job_id, role, point) at each step of the protocol (crash injection).
FAULT: Callable[[str, str, str], None] | None = None


def _ff(v: float) -> float:
    return v if v != NEG_INF else -1e300


class Stopper:
    """Why the job should stop now, if it should: SIGTERM, the stop file, or both sources idle."""

    def __init__(self, params: StreamParams) -> None:
        self.params = params
        self.signalled = threading.Event()
        self.idle_since: float | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.signalled.set())

    def saw(self, idle: bool) -> None:
        if not idle:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = time.monotonic()

    def reason(self, *, idle: bool = True) -> str | None:
        if self.signalled.is_set():
            return "stopped (SIGTERM)"
        if self.params.stop_file and Path(self.params.stop_file).exists():
            return "stopped (stop file)"
        limit = self.params.stop_when_idle_s
        if idle and limit is not None and self.idle_since is not None and time.monotonic() - self.idle_since >= limit:
            return f"both sources idle for {limit:g} s"
        return None


class _Job:
    """What the two roles share: sources, store, key agreement, stats, session restarts."""

    role = ""

    def __init__(self, cfg: JobConfig, params: StreamParams, reporter: Reporter, source: Source) -> None:
        self.cfg = cfg
        self.p = params
        self.reporter = reporter
        self.source = source
        self.store = BlockStore(cfg.output_dir, fault=self.fault)
        self.stopper = Stopper(params)
        self.sessions = 0
        self.blocks_committed = 0
        self.newest_committed = NEG_INF
        self.offset: Any = None
        self._last_stats = 0.0
        self._waiting: bool | None = None
        self.partner: dict[str, Any] = {}
        self.quiet_since: float | None = None  # when this side's source last went quiet
        self.following = False

    def quiet(self, batch: EventBatch | None) -> bool:
        """Whether this side's source has delivered nothing for ``idle_timeout_s`` (its watermark then follows)."""
        limit = self.p.idle_timeout_s
        if batch is not None:
            self.quiet_since = None
            if self.following:
                self.following = False
                self.reporter.log(
                    f"stream: {self.source.describe()} delivers again; its own events drive its watermark"
                )
            return False
        now = time.monotonic()
        if self.quiet_since is None:
            self.quiet_since = now
        if limit is None or now - self.quiet_since < limit:
            return False
        if not self.following:
            self.following = True
            self.reporter.log(
                f"stream: no events from {self.source.describe()} for {limit:g} s: this side's watermark now follows "
                "the partner's, so the partner's events can expire (events older than it arriving later count as late)"
            )
        return True

    def fault(self, point: str) -> None:
        if FAULT is not None:
            FAULT(self.cfg.job_id, self.role, point)

    # -- key agreement --------------------------------------------------------
    def my_hello(self, committed: int, prepared: tuple[int, dict[str, Any]] | None) -> pb.StreamHello:
        self._x = X25519PrivateKey.generate()
        self._nonce = os.urandom(16)
        key = self.store.load_key()
        return pb.StreamHello(
            protocol_version=PROTOCOL_VERSION,
            job_id=self.cfg.job_id,
            role=self.role,
            shared_params=self.p.shared(),
            x25519_public=self._x.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            nonce=self._nonce,
            key_check=hmac.digest(key, KEY_CHECK, "sha256") if key else b"",
            committed_seq=committed,
            prepared_seq=prepared[0] if prepared else 0,
            prepared_digest=bytes.fromhex(prepared[1]["id_digest"]) if prepared else b"",
        )

    def check_hello(self, h: pb.StreamHello) -> None:
        other = "follower" if self.role == "leader" else "leader"
        if h.protocol_version != PROTOCOL_VERSION:
            raise PeerError(f"the partner speaks stream protocol {h.protocol_version}, this runtime {PROTOCOL_VERSION}")
        if h.job_id != self.cfg.job_id:
            raise PeerError(f"the partner runs job {h.job_id}, not {self.cfg.job_id}")
        if h.role != other:
            raise PeerError(f"the partner is a {h.role}, expected the {other}")
        if h.shared_params != self.p.shared():
            raise ConfigError(f"stream: the partner's parameters {h.shared_params} differ from ours {self.p.shared()}")
        if len(h.x25519_public) != 32 or len(h.nonce) != 16:
            raise PeerError("the partner's key-agreement hello is malformed")

    def derive_key(self, leader: pb.StreamHello, follower: pb.StreamHello, theirs: pb.StreamHello) -> bytes:
        shared = self._x.exchange(X25519PublicKey.from_public_bytes(theirs.x25519_public))
        return HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=leader.nonce + follower.nonce,
            info=b"fedsite stream_join v1 " + self.cfg.job_id.encode(),
        ).derive(shared)

    # -- stats --------------------------------------------------------------
    def stats(self, counters: dict[str, int], force: bool = False) -> dict[str, Any]:
        read = counters["events_read"]
        out = {
            "events_read": read,
            "matched": counters["matched"],
            "match_rate": round(counters["matched"] / read, 6) if read else 0.0,
            "late_events": counters["late_events"],
            "blocks_committed": self.blocks_committed,
            "lag_s": round(time.time() - self.newest_committed, 3) if self.newest_committed != NEG_INF else None,
        }
        now = time.monotonic()
        if force or now - self._last_stats >= STATS_EVERY_S:
            self._last_stats = now
            for name, value in out.items():
                if value is not None:
                    self.reporter.metric(name, float(value), step=self.blocks_committed, split="stream")
        return out

    def idle(self, idle: bool) -> None:
        """Show "waiting for data" while the sources deliver nothing (never a failure)."""
        self.stopper.saw(idle)
        waiting = idle and self.stopper.idle_since is not None and time.monotonic() - self.stopper.idle_since >= 2.0
        if waiting == self._waiting:
            return
        self._waiting = waiting
        if waiting:
            self.reporter.log(f"stream: waiting for data (no new events from {self.source.describe()} or the partner)")
            self.reporter.progress(0.0, WAITING, force=True)
        else:
            self.reporter.progress(0.0, STAGE, force=True)

    def committed(self, manifest: dict[str, Any], offset: Any) -> None:
        self.blocks_committed += 1
        if manifest["event_time_max"] is not None:
            self.newest_committed = max(self.newest_committed, float(manifest["event_time_max"]))
        self.source.committed(offset)

    def resume(self, committed: int) -> dict[str, Any] | None:
        """Back to block ``committed``: its checkpoint (None: the beginning) and the source right after it."""
        ck = self.store.load_checkpoint(committed)
        self.offset = ck["meta"]["offset"] if ck else None
        self.source.seek(self.offset)
        if committed:
            m = self.store.manifest(committed)
            self.newest_committed = max(self.newest_committed, m["event_time_max"] or NEG_INF)
        return ck

    # -- sessions -----------------------------------------------------------
    def open_link(self) -> Any:
        raise NotImplementedError

    def session(self, link: Any) -> dict[str, Any]:
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        self.stopper.install()
        self.reporter.log(f"stream: {self.role} reading {self.source.describe()}")
        self.reporter.progress(0.0, STAGE, force=True)
        while True:
            link = self.open_link()
            self.sessions += 1
            try:
                result = self.session(link)
            except LinkLost as exc:
                self.lost(link)
                committed, _ = self.store.last_committed()
                self.reporter.log(f"stream: {exc}; resuming from block {committed} when the partner is back", "warning")
                continue
            except PartnerDone as done:
                self.close(link)
                return self.finish(f"the partner stopped the job: {done.reason}")
            except Exception as exc:
                link.fail(exc)
                raise
            except BaseException:
                link.abort()
                raise
            self.close(link)
            return result

    def lost(self, link: Any) -> None:
        link.abort()

    def close(self, link: Any) -> None:
        link.close()

    def finish(self, reason: str, counters: dict[str, int] | None = None) -> dict[str, Any]:
        counters = counters or self.last_counters
        self.reporter.log(f"stream: {reason}")
        out = self.stats(counters, force=True)
        committed, _ = self.store.last_committed()
        return {
            **out,
            "last_block": committed,
            "expired": counters.get("expired", 0),
            "duplicate_events": counters.get("duplicate_events", 0),
            "watermark_follows": counters.get("watermark_follows", 0),
            "sessions": self.sessions,
            "stopped": reason,
            "partner": self.partner,
        }

    last_counters: dict[str, int] = {}


class LeaderJob(_Job):
    role = "leader"

    _link: StreamLeaderLink | None = None

    def open_link(self) -> StreamLeaderLink:
        """The job's server (bound once, kept across sessions), with the follower's next session."""
        if self._link is None:
            self._link = StreamLeaderLink(self.cfg)
        try:
            self._link.accept(self.p.connect_timeout_s)
        except PeerError:
            self._link.close(grace_s=1.0)
            raise
        return self._link

    def lost(self, link: Any) -> None:
        link.end_session()

    def session(self, link: StreamLeaderLink) -> dict[str, Any]:
        p = self.p
        fh = link.recv(p.connect_timeout_s, "the follower's hello").hello
        self.check_hello(fh)
        committed, manifest = self.store.last_committed()
        mine = self.my_hello(committed, None)
        digest = manifest["id_digest"] if manifest else ""
        if fh.committed_seq == committed:
            pass  # a prepared block after it (if any) is aborted by the follower
        elif fh.committed_seq == committed - 1 and fh.prepared_seq == committed and fh.prepared_digest.hex() == digest:
            pass  # the follower commits its in-doubt block: we did
        else:
            raise DataError(
                f"stream: the block stores disagree: the leader committed up to block {committed}, the follower up to "
                f"{fh.committed_seq} (prepared {fh.prepared_seq}); were files under stream/ removed?"
            )
        key = self.store.load_key()
        new_key = not (key and fh.key_check and hmac.compare_digest(fh.key_check, mine.key_check))
        if new_key and (committed or fh.committed_seq or fh.prepared_seq):
            raise ConfigError(
                "stream: the two runtimes do not hold the same job key although blocks are committed "
                "(a side's stream/state/key was lost or replaced); the job cannot resume"
            )
        link.send(pb.StreamLeaderMessage(hello=mine))
        link.send(
            pb.StreamLeaderMessage(
                welcome=pb.StreamWelcome(
                    committed_seq=committed, committed_digest=bytes.fromhex(digest), new_key=new_key
                )
            )
        )
        if new_key:
            key = self.derive_key(mine, fh, fh)
            self.store.save_key(key)
        assert key is not None
        state = LeaderJoin(key, p.max_delay_s, p.lateness_s)
        ck = self.resume(committed)
        if ck:
            state.restore(ck["meta"], ck["snapshot"], ck["deltas"], ck["snapshot_meta"])
        self.last_counters = state.counters
        self.reporter.log(f"stream: session {self.sessions} with the follower, resuming after block {committed}")
        seq = committed + 1
        partner_wm = NEG_INF  # the follower's watermark, from its last answer
        while True:
            reason = self.stopper.reason()
            if reason:
                link.send(pb.StreamLeaderMessage(done=pb.StreamDone(reason=reason)))
                return self.finish(reason, state.counters)
            batch = self.source.read(p.max_batch_events)
            if batch is not None:
                self.offset = batch.offset
            if self.quiet(batch):
                state.follow(partner_wm)
            first, keys, times, _late = state.add(batch)
            self.fault("read")
            link.send(
                pb.StreamLeaderMessage(
                    query=pb.JoinQuery(
                        seq=seq,
                        first_lsn=first,
                        keys=keys.astype("<u8").tobytes(),
                        times=times.astype("<f8").tobytes(),
                        watermark=_ff(state.watermark),
                        idle=batch is None,
                    )
                )
            )
            self.fault("sent query")
            ans = link.recv(p.peer_timeout_s, "the follower's answer")
            if ans.WhichOneof("body") != "answer" or ans.answer.seq != seq:
                raise PeerError(f"the follower answered out of turn (expected the answer for block {seq})")
            a = ans.answer
            self.partner = {"events_read": a.events_read, "late_events": a.late_events}
            partner_wm = NEG_INF if a.watermark <= -1e300 else a.watermark
            lsns = np.frombuffer(a.matched_lsns, dtype="<i8")
            if len(lsns):
                try:
                    rows = state.matched(lsns)
                except ValueError:
                    raise PeerError(f"the follower matched leader events it was never sent (block {seq})") from None
                state.expire(a.watermark)
                m = manifest_for(seq, rows, self.offset)
                if m["id_digest"] != a.id_digest.hex():
                    raise DataError(
                        f"stream: block {seq}: the follower's id digest differs from ours (a keyed-hash collision, "
                        "or the sides hash different ids)"
                    )
                self.store.write_block(seq, rows)
                meta, parts = state.checkpoint(full=self.store.wants_snapshot(seq))
                self.store.write_checkpoint(seq, {**meta, "offset": self.offset}, parts)
                self.fault("prepared")
                self.store.commit(seq, m)
                self.fault("committed")
                link.send(pb.StreamLeaderMessage(commit=pb.BlockCommit(seq=seq)))
                self.fault("sent commit")
                self.committed(m, self.offset)
                seq += 1
            else:
                state.expire(a.watermark)
            self.stats(state.counters)
            both_idle = batch is None and a.idle
            self.idle(both_idle)
            if both_idle:
                time.sleep(p.poll_interval_s)


class FollowerJob(_Job):
    role = "follower"

    def open_link(self) -> StreamFollowerLink:
        return StreamFollowerLink(self.cfg, self.p.connect_timeout_s)

    def session(self, link: StreamFollowerLink) -> dict[str, Any]:
        p = self.p
        committed, _ = self.store.last_committed()
        prepared = self.store.prepared(committed)
        mine = self.my_hello(committed, prepared)
        link.send(pb.StreamFollowerMessage(hello=mine))
        lh = link.recv(p.connect_timeout_s, "the leader's hello").hello
        self.check_hello(lh)
        w = link.recv(p.peer_timeout_s, "the leader's welcome").welcome
        if prepared is not None:
            pseq, pman = prepared
            if pseq == w.committed_seq and w.committed_digest.hex() == pman["id_digest"]:
                self.store.commit(pseq, pman)  # the leader committed our in-doubt block
                self.reporter.log(f"stream: block {pseq} was in doubt; the leader committed it, so do we")
            else:
                self.store.abort(pseq)
                self.reporter.log(f"stream: block {pseq} was in doubt; the leader did not commit it, so neither do we")
        committed, _ = self.store.last_committed()
        if committed != w.committed_seq:
            raise DataError(
                f"stream: the block stores disagree: the follower committed up to block {committed}, "
                f"the leader up to {w.committed_seq}"
            )
        if w.new_key:
            key = self.derive_key(lh, mine, lh)
            self.store.save_key(key)
        else:
            stored = self.store.load_key()
            if stored is None:
                raise ConfigError("stream: the job key is missing on this side (stream/state/key)")
            key = stored
        state = FollowerJoin(key, p.max_delay_s, p.lateness_s)
        ck = self.resume(committed)
        if ck:
            state.restore(ck["meta"], ck["snapshot"], ck["deltas"], ck["snapshot_meta"])
        self.last_counters = state.counters
        self.reporter.log(f"stream: session {self.sessions} with the leader, resuming after block {committed}")
        pending: tuple[int, dict[str, Any], Any] | None = None  # prepared, awaiting the leader's commit
        while True:
            msg = link.recv(p.peer_timeout_s, "the leader's next round")
            body = msg.WhichOneof("body")
            if body == "commit":
                if pending is None or pending[0] != msg.commit.seq:
                    raise PeerError(f"the leader committed block {msg.commit.seq}, which is not the one prepared here")
                self.fault("got commit")
                self.store.commit(pending[0], pending[1])
                self.fault("committed")
                self.committed(pending[1], pending[2])
                pending = None
                continue
            if body != "query":
                raise PeerError(f"unexpected {body} message from the leader")
            q = msg.query
            if pending is not None:
                raise PeerError(f"the leader sent block {q.seq} before committing block {pending[0]}")
            reason = self.stopper.reason(idle=False)  # idleness of both sources is the leader's call
            if reason:
                link.send(pb.StreamFollowerMessage(done=pb.StreamDone(reason=reason)))
                return self.finish(reason, state.counters)
            self.fault("got query")
            batch = self.source.read(p.max_batch_events)
            if batch is not None:
                self.offset = batch.offset
            keys = np.frombuffer(q.keys, dtype="<u8")
            times = np.frombuffer(q.times, dtype="<f8")
            if len(keys) != len(times):
                raise PeerError("the leader sent a malformed round (keys and times differ in number)")
            lwm = NEG_INF if q.watermark <= -1e300 else q.watermark
            if self.quiet(batch):
                state.follow(lwm)
            lsns, rows = state.round(batch, keys, times, q.first_lsn, lwm)
            digest = b""
            if len(lsns):
                m = manifest_for(q.seq, rows, self.offset)
                self.store.write_block(q.seq, rows)
                meta, parts = state.checkpoint(full=self.store.wants_snapshot(q.seq))
                self.store.write_checkpoint(q.seq, {**meta, "offset": self.offset}, parts)
                self.store.mark_prepared(q.seq, m)
                self.fault("prepared")
                pending = (q.seq, m, self.offset)
                digest = bytes.fromhex(m["id_digest"])
            link.send(
                pb.StreamFollowerMessage(
                    answer=pb.JoinAnswer(
                        seq=q.seq,
                        matched_lsns=lsns.astype("<i8").tobytes(),
                        id_digest=digest,
                        watermark=_ff(state.watermark),
                        events_read=state.counters["events_read"],
                        late_events=state.counters["late_events"],
                        idle=batch is None,
                    )
                )
            )
            self.fault("answered")
            self.stats(state.counters)
            self.idle(batch is None and q.idle)


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    params = parse_stream_params(cfg.stream, job_id=cfg.job_id, role=cfg.role)
    if cfg.is_leader and not cfg.data.label_column:
        raise ConfigError("data.label_column: required for the leader (its events carry the label)")
    if not cfg.is_leader and cfg.data.label_column:
        raise ConfigError("data.label_column: the follower's events carry no label (leave it null)")
    cols = Columns(cfg.data.id_column, params.time_column, cfg.data.label_column if cfg.is_leader else None)
    source = open_source(params, cfg.data.path, cols, warn=lambda text: reporter.log(f"stream: {text}", "warning"))
    try:
        job: _Job = (
            LeaderJob(cfg, params, reporter, source) if cfg.is_leader else FollowerJob(cfg, params, reporter, source)
        )
        return job.run()
    finally:
        with contextlib.suppress(Exception):
            source.close()


def iter_blocks(output_dir: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The committed blocks of a side, in order: (seq, manifest)."""
    store = BlockStore(output_dir)
    last, _ = store.last_committed()
    for seq in range(1, last + 1):
        yield seq, store.manifest(seq)
