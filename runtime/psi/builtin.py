"""The built-in PSI engine: ECDH on Curve25519 and RSA blind signatures, over gRPC + mTLS.

The leader serves ``PsiService``; the follower drives the run with unary calls,
several batches in flight, while both sides' process pools do the arithmetic.

ECDH (keys ``a`` leader, ``b`` follower; ``H`` = RFC 9380 Elligator 2):
    follower batch i:  F -> L  b·H(y)          L -> F  first16(a·b·H(y))   (Exchange; both keep it)
    leader batch j:    F <- L  a·H(x)          F -> L  first16(b·a·H(x))   (Pull, Push; both keep it)
RSA (leader holds the key; FDH = SHAKE-256 into Z_n, H2 = BLAKE2b-128):
    follower batch i:  F -> L  FDH(y)·r^e      L -> F  (FDH(y)·r^e)^d      (Exchange, CRT signing)
                       F -> L  H2(FDH(y)^d)                                 (Push, so the leader learns it)
    leader batch j:    F <- L  H2(FDH(x)^d)                                 (Pull)

Each side then intersects its own final values with the partner's, orders the
common rows by final value (identical on both sides) and writes its own rows.
Every batch result is checkpointed; a restarted pair resumes the same session.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from fedsite_proto.runtime.v1 import psi_pb2, psi_pb2_grpc
from runtime.config import JobConfig
from runtime.errors import DataError, PeerError, RuntimeJobError
from runtime.lifeline import die_with_parent
from runtime.psi import crypto, libpsi_engine
from runtime.psi.common import (
    Output,
    PsiParams,
    batch_count,
    batch_len,
    capabilities,
    choose,
    intersect_parts,
    preference,
)
from runtime.psi.data import Table, check_ids, has_rows, write_aligned
from runtime.report import Reporter
from runtime.tls import CHANNEL_OPTIONS, NO_PORT_SHARING, add_port, open_channel

PROTOCOL_VERSION = 1
KIND_LEADER_FINAL = 1
KIND_FOLLOWER_FINAL = 2
OWN, PEER, ENC = "own_final", "peer_final", "enc"
ERROR_GRACE_S = 30.0  # how long a side with bad input waits to tell its partner
LEADER_GRACE_S = 3.0  # how long a failed libpsi follower waits for the leader to end first


class _Pool:
    """A process pool (``workers`` > 0, spawn: safe beside gRPC threads) or inline threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        if workers > 0:
            # Workers exit when the runtime dies (killed or crashed), not hours later as orphans.
            self._ex: cf.Executor = cf.ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        else:
            self._ex = cf.ThreadPoolExecutor(1)

    def run(self, fn: Callable, *args: Any) -> Any:
        return self._ex.submit(fn, *args).result()

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        return self._ex.submit(fn, *args)

    def close(self) -> None:
        # Wait for the workers to exit (at most one batch in progress each), so none is left behind.
        self._ex.shutdown(wait=True, cancel_futures=True)


class _Progress:
    def __init__(self, reporter: Reporter, total: int) -> None:
        self.reporter, self.total, self.done = reporter, max(total, 1), 0
        self._lock = threading.Lock()

    def step(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            value = 0.95 * min(self.done, self.total) / self.total
        self.reporter.progress(value, "psi")


def _state_matches(state: dict[str, Any] | None, table: Table, params: PsiParams, cfg: JobConfig, n: int) -> bool:
    return bool(
        state
        and state.get("job_id") == cfg.job_id
        and state.get("protocol") == params.protocol
        and state.get("suite") == params.suite
        and state.get("batch_size") == params.batch_size
        and state.get("input") == table.fingerprint()
        and state.get("input_size") == n
        and state.get("role") == cfg.role
    )


class _Run:
    """What both roles share: input, checkpoint, pool, final values, output."""

    failure: RuntimeJobError | None  # the session's failure, set by either role's gRPC side
    link_hold: libpsi_engine.PortHold | None  # this side's libpsi link port, held until the link listens

    def __init__(
        self, cfg: JobConfig, params: PsiParams, reporter: Reporter, worker: libpsi_engine.Worker | None = None
    ) -> None:
        self.cfg, self.params, self.reporter = cfg, params, reporter
        self.out = Output(cfg)
        self.ckpt = self.out.ckpt
        self.started = time.monotonic()
        self.deadline = self.started + cfg.timeout_s
        self.local_error: RuntimeJobError | None = None
        self.table: Table | None = None
        self.n = 0
        self.resumed = False
        self.counted = False
        try:
            self.table = Table(cfg.data.path, cfg.data.id_column)
            if not has_rows(self.table):
                raise DataError(f"data.path: {self.table.path.name} has no rows")
        except DataError as exc:
            self.local_error = exc
        self.out.clear_results()
        self.pool: _Pool | None = None
        self.requested = params
        self.libpsi_why = libpsi_engine.available()
        if self.libpsi_why is None and self.table is not None and self.table.is_parquet:
            self.libpsi_why = "libpsi reads CSV only"
        elif self.libpsi_why is None and self.table is not None and not self.table.plain:
            self.libpsi_why = "libpsi cannot read CSV files with quoted fields or CR line ends"
        self.caps = capabilities(params, self.libpsi_why is None)
        self.libpsi_plan: tuple[str, list[tuple[str, str]]] | None = None
        self.libpsi_worker: libpsi_engine.Worker | None = None
        if self.local_error is None and "libpsi/" in (preference(params)[:1] or [""])[0] and "libpsi/rr22" in self.caps:
            # Load libpsi and read this side's ids while the two sides shake hands.
            self.libpsi_worker = worker or libpsi_engine.Worker(cfg)
        elif worker is not None:
            worker.close(0)  # started early, but this run will not use libpsi
        self._settled = False

    def settle_libpsi(self) -> None:
        """Before libpsi is offered to the partner: wait until the worker has really loaded it."""
        if self._settled:
            return
        self._settled = True
        if self.libpsi_worker is None:
            return
        why = self.libpsi_worker.wait_loaded(min(120.0, self.remaining()))
        if why is not None:
            self.libpsi_why = why
            self.caps = capabilities(self.requested, False)
            self.libpsi_worker.close(0)
            self.libpsi_worker = None

    def count(self) -> None:
        """Count this side's ids and check them (built-in engine only; libpsi counts for itself)."""
        if not self.counted:
            assert self.table is not None
            self.n = check_ids(self.table, self.params.batch_size, self.out.root / ".ids-spill")
            self.counted = True

    def run_libpsi(self, protocol: str, parties: list[tuple[str, str]]) -> dict[str, Any]:
        """This side of an agreed libpsi session; a failure of the session (`failure`) stops it."""
        return libpsi_engine.run_libpsi(
            self.cfg,
            protocol,
            parties,
            self.reporter,
            self.started,
            self.libpsi_worker,
            lambda: self.failure,
            self.link_hold,
        )

    def close_worker(self) -> None:
        if self.libpsi_worker is not None:
            self.libpsi_worker.close()

    def fallback_note(self, chosen: str) -> None:
        engine, protocol = chosen.split("/")
        if engine == "builtin" and (
            self.requested.protocol != protocol
            or self.requested.engine == "libpsi"
            or self.requested.protocol == "auto"
        ):
            why = self.libpsi_why or "the partner cannot run libpsi"
            self.reporter.log(f"psi: libpsi not used ({why}); running the built-in engine with {protocol}", "warning")
        self.reporter.log(f"psi: engine {engine}, protocol {protocol}")

    def remaining(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def finals(self, kind: str, n: int) -> Any:
        """The final values of one side's batches, one batch at a time."""
        count = batch_count(n, self.params.batch_size)
        for i in range(count):
            if not self.ckpt.has(kind, i):
                raise PeerError(f"internal: batch {i} of {kind} missing at the end of the exchange")
        for i in range(count):
            yield self.ckpt.read(kind, i)

    def intersect(self, peer_n: int) -> tuple[Any, bytes]:
        return intersect_parts(
            self.finals(OWN, self.n), self.finals(PEER, peer_n), self.n + peer_n, crypto.DIGEST, self.ckpt.root / "join"
        )

    def write_output(self, rows: Any, peer_n: int, extra: dict[str, Any]) -> dict[str, Any]:
        assert self.table is not None
        write_aligned(self.table, rows, self.out.aligned, 65536)
        stats = {
            "engine": "builtin",
            "protocol": self.params.protocol,
            "suite": self.params.suite,
            "input_size": self.n,
            "peer_input_size": peer_n,
            "intersection_size": int(len(rows)),
            "seconds": round(time.monotonic() - self.started, 3),
            "resumed": self.resumed,
            "workers": self.params.workers,
            "role": self.cfg.role,
            **extra,
        }
        self.out.write_stats(stats)
        self.ckpt.remove()
        self.reporter.progress(1.0, "psi")
        return stats


# -- leader -------------------------------------------------------------------------------


class _Leader(_Run, psi_pb2_grpc.PsiServiceServicer):
    def __init__(
        self, cfg: JobConfig, params: PsiParams, reporter: Reporter, worker: libpsi_engine.Worker | None = None
    ) -> None:
        super().__init__(cfg, params, reporter, worker)
        self._lock = threading.Condition()
        self.hello_seen = threading.Event()
        self.done = threading.Event()
        self.failure: RuntimeJobError | None = None
        self.session: str | None = None
        self.state: dict[str, Any] = {}
        self.peer_n = 0
        self.result: tuple[Any, bytes] | None = None
        self.progress: _Progress | None = None
        self.producer: threading.Thread | None = None
        self.ready: set[int] = set()
        self.wake = threading.Event()  # the main thread has something to do: finish, fail or run libpsi
        self.libpsi_finished = False
        self.link_hold: libpsi_engine.PortHold | None = None

    def fail(self, exc: RuntimeJobError) -> None:
        with self._lock:
            if self.failure is None and not self.done.is_set():
                self.failure = exc
            self._lock.notify_all()
        self.done.set()
        self.wake.set()

    # -- session set-up ------------------------------------------------------
    def Hello(self, request, context):  # noqa: N802 - gRPC method name
        self.hello_seen.set()
        if self.local_error is not None:
            return psi_pb2.PsiHelloReply(ok=False, error=f"the leader cannot run: {self.local_error}")
        if request.error:
            self.fail(PeerError(f"the partner (follower) failed: {request.error}"))
            return psi_pb2.PsiHelloReply(ok=False, error="acknowledged")
        mine = (self.requested.protocol, PROTOCOL_VERSION, self.requested.suite)
        theirs = (request.protocol, request.protocol_version, request.suite)
        if request.job_id != self.cfg.job_id:
            msg = f"job mismatch: leader runs job {self.cfg.job_id}, follower asked for {request.job_id}"
        elif mine != theirs:
            msg = f"protocol mismatch: leader uses {mine[0]} v{mine[1]} ({mine[2]}), follower uses {theirs[0]} v{theirs[1]} ({theirs[2]})"
        else:
            msg = ""
        if msg:
            self.fail(PeerError(msg))
            return psi_pb2.PsiHelloReply(ok=False, error=msg)
        with self._lock:
            self.settle_libpsi()
        chosen = choose(self.requested, self.caps, list(request.capabilities))
        if chosen is None:
            msg = f"no PSI engine both sides can run for protocol {self.requested.protocol!r} engine {self.requested.engine!r} (leader: {', '.join(self.caps) or 'none'}; follower: {', '.join(request.capabilities) or 'none'})"
            self.fail(PeerError(msg))
            return psi_pb2.PsiHelloReply(ok=False, error=msg)
        engine, protocol = chosen.split("/")
        if engine == "libpsi":
            with self._lock:
                if self.libpsi_plan is None:
                    assert self.cfg.listen_address, "listen_address is validated for the leader"
                    host = self.cfg.listen_address.rpartition(":")[0]
                    port = self.requested.link_port
                    if not port:
                        # Held until libpsi's link listens on it, so no other process takes it meanwhile.
                        self.link_hold = libpsi_engine.PortHold(host.strip("[]") or "0.0.0.0")
                        port = self.link_hold.port
                    link = f"{host}:{port}"
                    self.libpsi_plan = (protocol, [("leader", link), ("follower", request.link_address)])
                    self.fallback_note(chosen)
                self.hello_seen.set()
                self.wake.set()
            return psi_pb2.PsiHelloReply(
                ok=True, protocol=protocol, engine="libpsi", link_address=self.libpsi_plan[1][0][1], input_size=self.n
            )
        if request.probe:
            return psi_pb2.PsiHelloReply(ok=True, protocol=protocol, engine="builtin")
        if protocol != self.params.protocol:
            self.params = dataclasses.replace(self.params, protocol=protocol)
        with self._lock:
            if self.session is None:
                self.fallback_note(chosen)
                try:
                    self.count()
                except DataError as exc:
                    self.local_error = exc
                    self.fail(exc)
                    return psi_pb2.PsiHelloReply(ok=False, error=f"the leader cannot run: {exc}")
                self._open_session(request)
            elif request.session_id != self.session:
                return psi_pb2.PsiHelloReply(ok=False, error="a PSI session is already running with another follower")
        rsa_n = b""
        rsa_e = 0
        if self.params.protocol == "rsa":
            n, e = self.state["key"][0], self.state["key"][1]
            rsa_n, rsa_e = int(n).to_bytes((int(n).bit_length() + 7) // 8, "big"), int(e)
        return psi_pb2.PsiHelloReply(
            ok=True,
            session_id=self.session,
            input_size=self.n,
            batch_size=self.params.batch_size,
            rsa_n=rsa_n,
            rsa_e=rsa_e,
            have_follower_final=self.ckpt.indices(PEER),
            have_leader_final=self.ckpt.indices(OWN),
            protocol=self.params.protocol,
            engine="builtin",
        )

    def _open_session(self, request) -> None:
        assert self.table is not None
        self.peer_n = int(request.input_size)
        state = self.ckpt.load()
        if (
            state is not None
            and _state_matches(state, self.table, self.params, self.cfg, self.n)
            and request.session_id
            and request.session_id == state["session_id"]
            and state.get("peer_input_size") == self.peer_n
        ):
            self.resumed = True
            self.state = state
            self.reporter.log(f"psi: resuming session {state['session_id'][:8]} from its checkpoint")
        else:
            if self.params.protocol == "rsa":
                key = crypto.new_rsa_key(self.params.rsa_bits, self.params.rsa_primes)
                keyj: Any = [key[0], key[1], list(key[2]), list(key[3])]
            else:
                keyj = crypto.new_ecdh_key().hex()
            self.state = {
                "session_id": uuid.uuid4().hex,
                "job_id": self.cfg.job_id,
                "role": self.cfg.role,
                "protocol": self.params.protocol,
                "suite": self.params.suite,
                "batch_size": self.params.batch_size,
                "input": self.table.fingerprint(),
                "input_size": self.n,
                "peer_input_size": self.peer_n,
                "key": keyj,
            }
            self.ckpt.reset(self.state)
        self.session = self.state["session_id"]
        bs = self.params.batch_size
        self.progress = _Progress(self.reporter, batch_count(self.n, bs) + batch_count(self.peer_n, bs))
        self.progress.step(len(self.ckpt.indices(OWN)) + len(self.ckpt.indices(PEER)))
        serve_kind = OWN if self.params.protocol == "rsa" else ENC
        self.ready = set(self.ckpt.indices(serve_kind))
        self.producer = threading.Thread(target=self._produce, name="psi-producer", daemon=True)
        self.producer.start()

    def _key(self) -> Any:
        k = self.state["key"]
        if self.params.protocol == "rsa":
            return (k[0], k[1], tuple(k[2]), tuple(k[3]))
        return bytes.fromhex(k)

    def _produce(self) -> None:
        """Compute the leader's own batches (ECDH: a·H(x); RSA: final digests) in the pool."""
        assert self.table is not None and self.pool is not None
        rsa = self.params.protocol == "rsa"
        kind = OWN if rsa else ENC
        key = self._key()
        inflight: list[tuple[int, cf.Future]] = []
        limit = max(2, 2 * self.params.workers)
        try:

            def drain(block_until: int) -> None:
                while len(inflight) > block_until:
                    j, fut = inflight.pop(0)
                    data = fut.result()
                    self.ckpt.write(kind, j, data)
                    with self._lock:
                        self.ready.add(j)
                        self._lock.notify_all()
                    if rsa and self.progress:
                        self.progress.step()

            for j, ids in enumerate(self.table.iter_ids(self.params.batch_size)):
                if self.done.is_set():
                    return
                if j in self.ready:
                    continue
                if rsa:
                    fut = self.pool.submit(crypto.rsa_sign_own, key, ids)
                else:
                    fut = self.pool.submit(crypto.ecdh_encrypt_ids, key, ids, self.params.suite)
                inflight.append((j, fut))
                drain(limit)
            drain(0)
        except RuntimeJobError as exc:
            self.fail(exc)
        except Exception as exc:  # noqa: BLE001 - reported to both sides
            self.fail(RuntimeJobError(f"leader failed computing its batches: {exc.__class__.__name__}: {exc}"))

    # -- the exchange --------------------------------------------------------
    def _check(self, session_id: str, context) -> None:
        if self.failure is not None:
            context.abort(grpc.StatusCode.ABORTED, f"the leader failed: {self.failure}")
        if session_id != self.session:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "unknown PSI session")

    def Exchange(self, request, context):  # noqa: N802
        self._check(request.session_id, context)
        assert self.pool is not None
        i = request.index
        expected = (
            batch_len(self.peer_n, self.params.batch_size, i)
            if i < batch_count(self.peer_n, self.params.batch_size)
            else -1
        )
        if request.count != expected:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"batch {i}: expected {expected} values, got {request.count}"
            )
        try:
            if self.params.protocol == "rsa":
                sigs = self.pool.run(crypto.rsa_sign_blinded, self._key(), request.values)
                return psi_pb2.PsiBatch(session_id=self.session, index=i, values=sigs, count=request.count)
            if len(request.values) != expected * crypto.POINT:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch {i}: wrong length")
            finals = crypto.ecdh_final(self.pool.run(crypto.ecdh_reencrypt, self._key(), request.values))
        except crypto.CryptoError as exc:
            self.fail(PeerError(f"the partner sent bad values: {exc}"))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not self.ckpt.has(PEER, i):
            self.ckpt.write(PEER, i, finals)
            if self.progress:
                self.progress.step()
        return psi_pb2.PsiBatch(session_id=self.session, index=i, values=finals, count=request.count)

    def Pull(self, request, context):  # noqa: N802
        self._check(request.session_id, context)
        j = request.index
        if j >= batch_count(self.n, self.params.batch_size):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no leader batch {j}")
        with self._lock:
            while j not in self.ready and self.failure is None:
                if not self._lock.wait(timeout=1.0) and not context.is_active():
                    return psi_pb2.PsiBatch()
        self._check(request.session_id, context)
        kind = OWN if self.params.protocol == "rsa" else ENC
        return psi_pb2.PsiBatch(
            session_id=self.session,
            index=j,
            values=self.ckpt.read(kind, j),
            count=batch_len(self.n, self.params.batch_size, j),
        )

    def Push(self, request, context):  # noqa: N802
        self._check(request.session_id, context)
        rsa = self.params.protocol == "rsa"
        want_kind = KIND_FOLLOWER_FINAL if rsa else KIND_LEADER_FINAL
        n = self.peer_n if rsa else self.n
        idx = request.index
        if (
            request.kind != want_kind
            or idx >= batch_count(n, self.params.batch_size)
            or len(request.values) != batch_len(n, self.params.batch_size, idx) * crypto.DIGEST
        ):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad push for batch {idx}")
        kind = PEER if rsa else OWN
        if not self.ckpt.has(kind, idx):
            self.ckpt.write(kind, idx, request.values)
            if self.progress:
                self.progress.step()
        return psi_pb2.PsiAck()

    def Finish(self, request, context):  # noqa: N802
        self._check(request.session_id, context)
        try:
            if self.producer is not None:
                self.producer.join()
            rows, digest = self.intersect(self.peer_n)
        except RuntimeJobError as exc:
            self.fail(exc)
            return psi_pb2.PsiFinishReply(ok=False, error=str(exc))
        if len(rows) != request.intersection_size or digest != request.digest:
            err = f"the two sides computed different intersections (leader {len(rows)}, follower {request.intersection_size})"
            self.fail(PeerError(err))
            return psi_pb2.PsiFinishReply(ok=False, error=err)
        with self._lock:
            self.result = (rows, digest)
            self._lock.notify_all()
        self.done.set()
        self.wake.set()
        return psi_pb2.PsiFinishReply(ok=True, intersection_size=len(rows))

    def Abort(self, request, context):  # noqa: N802
        self.fail(PeerError(f"the partner (follower) failed: {request.error}"))
        return psi_pb2.PsiAck()

    def Watch(self, request, context):  # noqa: N802
        def gone() -> None:
            if self.result is None and not self.libpsi_finished:
                self.fail(PeerError("the partner (follower) disconnected in the middle of PSI"))

        context.add_callback(gone)
        while not self.done.wait(5.0):
            yield psi_pb2.PsiAck()
        if self.failure is not None:
            context.abort(grpc.StatusCode.ABORTED, f"the leader failed: {self.failure}")

    # -- main ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        server = grpc.server(
            cf.ThreadPoolExecutor(max_workers=32, thread_name_prefix="psi-rpc"),
            options=[*CHANNEL_OPTIONS, NO_PORT_SHARING],
        )
        psi_pb2_grpc.add_PsiServiceServicer_to_server(self, server)
        if self.local_error is None:
            self.pool = _Pool(self.params.workers)
        try:
            try:
                port = add_port(server, self.cfg)
            except RuntimeError as exc:
                raise PeerError(f"listen_address: cannot listen on {self.cfg.listen_address} ({exc})") from None
            if port == 0:
                raise PeerError(f"listen_address: cannot listen on {self.cfg.listen_address}")
            server.start()
            if self.local_error is not None:
                self.hello_seen.wait(min(ERROR_GRACE_S, self.remaining()))
                time.sleep(0.2)
                raise self.local_error
            self.reporter.log(
                f"psi: leader listening on {self.cfg.listen_address}, protocol {self.params.protocol}, engine {self.params.engine}"
            )
            if not self.wake.wait(self.remaining()):
                raise PeerError(
                    f"PSI did not finish within timeout_s={self.cfg.timeout_s:g}s"
                    + ("" if self.hello_seen.is_set() else " (the follower never connected)")
                )
            if self.failure is not None:
                raise self.failure
            if self.libpsi_plan is not None:
                # The gRPC server stays up: the follower's Watch stream tells either side at once if the other dies.
                protocol, parties = self.libpsi_plan
                stats = self.run_libpsi(protocol, parties)
                self.libpsi_finished = True
                return stats
            assert self.result is not None
            rows, _ = self.result
            return self.write_output(
                rows, self.peer_n, {"x25519": crypto.x25519_backend()} if self.params.protocol == "ecdh" else {}
            )
        finally:
            self.done.set()
            self.close_worker()
            if self.link_hold is not None:
                self.link_hold.release()
            server.stop(grace=1.0).wait(3)
            if self.pool is not None:
                self.pool.close()
            if self.producer is not None:
                # It stops at its next batch (done is set, the pool is shut): its Arrow reader must not be
                # in the middle of a read when the interpreter exits (a native thread then aborts the process).
                self.producer.join(10.0)


# -- follower -----------------------------------------------------------------------------


class _Follower(_Run):
    def __init__(
        self, cfg: JobConfig, params: PsiParams, reporter: Reporter, worker: libpsi_engine.Worker | None = None
    ) -> None:
        super().__init__(cfg, params, reporter, worker)
        self.failure: RuntimeJobError | None = None
        self.finishing = False
        self._stop = threading.Event()
        self.leader_done = threading.Event()
        self.watch_ended = threading.Event()  # the leader's Watch stream is over, however it ended

    def _rpc_error(self, exc: grpc.RpcError, what: str) -> PeerError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return PeerError(f"lost the connection to the leader during {what} ({details})")
        return PeerError(f"{what}: {details}")

    def _hello(self, stub, error: str = "", probe: bool = False) -> Any:
        state = None if probe or error else self.ckpt.load()
        if probe:
            self._sent_link = self._link_address() if "libpsi/rr22" in self.caps else ""
        session = ""
        if state and self.table is not None and _state_matches(state, self.table, self.params, self.cfg, self.n):
            session = state["session_id"]
        req = psi_pb2.PsiHello(
            job_id=self.cfg.job_id,
            protocol=self.requested.protocol,
            protocol_version=PROTOCOL_VERSION,
            engine=self.requested.engine,
            suite=self.requested.suite,
            input_size=self.n,
            batch_size=self.params.batch_size,
            session_id=session,
            error=error,
            capabilities=self.caps,
            link_address=self._sent_link if probe else "",
            probe=probe,
        )
        limit = min(ERROR_GRACE_S, self.remaining()) if error else self.remaining()
        end = time.monotonic() + limit
        last = "no answer"
        delay = 0.2
        while time.monotonic() < end:
            try:
                return stub.Hello(req, timeout=max(0.1, end - time.monotonic()), wait_for_ready=True), state
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise self._rpc_error(exc, "handshake") from None
                last = exc.details() or str(exc.code())
                time.sleep(min(delay, max(0.0, end - time.monotonic())))
                delay = min(delay * 2, 2.0)
        raise PeerError(f"could not reach the leader at {self.cfg.peer_address} within {limit:g}s ({last})")

    def _link_address(self) -> str:
        """A free local port for the libpsi link, on the address that reaches the leader."""
        host = (self.cfg.peer_address or "127.0.0.1").rpartition(":")[0].strip("[]") or "127.0.0.1"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, 9))
                local = s.getsockname()[0]
        except OSError:
            local = "127.0.0.1"
        # Held until libpsi's link listens on it, so no other process takes it meanwhile.
        if self.link_hold is not None:
            self.link_hold.release()
        self.link_hold = libpsi_engine.PortHold(local)
        return f"{local}:{self.link_hold.port}"

    def _watch(self, stub, session: str) -> None:
        try:
            self._watch_stream(stub, session)
        finally:
            self.watch_ended.set()

    def _watch_stream(self, stub, session: str) -> None:
        try:
            for _ in stub.Watch(psi_pb2.PsiBatchRef(session_id=session)):
                if self._stop.is_set():
                    return
        except grpc.RpcError as exc:
            if self._stop.is_set() or exc.code() == grpc.StatusCode.CANCELLED and self.finishing:
                return
            if self.failure is None:
                self.failure = (
                    self._rpc_error(exc, "PSI") if exc.code() != grpc.StatusCode.ABORTED else PeerError(exc.details())
                )
            self._stop.set()
            return
        if self.libpsi_mode:
            self.leader_done.set()
            return
        if not self.finishing and not self._stop.is_set() and self.failure is None:
            self.failure = PeerError("the leader ended the session early")
            self._stop.set()

    def run(self) -> dict[str, Any]:
        channel = open_channel(self.cfg)
        stub = psi_pb2_grpc.PsiServiceStub(channel)
        try:
            if self.local_error is not None:
                try:
                    self._hello(stub, error=str(self.local_error))
                except PeerError:
                    pass
                raise self.local_error
            self.pool = _Pool(self.params.workers)
            self.settle_libpsi()
            reply, _ = self._hello(stub, probe=True)
            if not reply.ok:
                raise PeerError(reply.error)
            chosen = f"{reply.engine or 'builtin'}/{reply.protocol or self.params.protocol}"
            self.fallback_note(chosen)
            if reply.engine == "libpsi":
                host = (self.cfg.peer_address or "").rpartition(":")[0]
                leader_port = reply.link_address.rpartition(":")[2]
                parties = [("leader", f"{host}:{leader_port}"), ("follower", self._sent_link)]
                self.libpsi_mode = True
                threading.Thread(target=self._watch, args=(stub, ""), daemon=True, name="psi-watch").start()
                try:
                    stats = self.run_libpsi(reply.protocol, parties)
                except PeerError:
                    # The leader's own worker tells it the same (say, its ids have a duplicate): let it end first,
                    # so it reports that, not this side's dropped connection ("disconnected in the middle").
                    self.watch_ended.wait(LEADER_GRACE_S)
                    raise
                self.leader_done.wait(10.0)  # let the leader finish before this side drops the connection
                return stats
            self.close_worker()
            if reply.protocol and reply.protocol != self.params.protocol:
                self.params = dataclasses.replace(self.params, protocol=reply.protocol)
            try:
                self.count()
            except DataError as exc:
                self.local_error = exc
                try:
                    self._hello(stub, error=str(exc))
                except PeerError:
                    pass
                raise
            reply, state = self._hello(stub)
            if not reply.ok:
                raise PeerError(reply.error)
            return self._exchange(stub, reply, state)
        except RuntimeJobError as exc:
            if not isinstance(exc, PeerError):
                self._abort(stub, str(exc))
            raise
        except BaseException as exc:
            self._abort(stub, f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            self._stop.set()
            self.close_worker()
            if self.link_hold is not None:
                self.link_hold.release()
            if self.pool is not None:
                self.pool.close()
            channel.close()

    def _abort(self, stub, error: str) -> None:
        if not self.session_id:
            return
        try:
            stub.Abort(psi_pb2.PsiAbort(session_id=self.session_id, error=error), timeout=3)
        except grpc.RpcError:
            pass

    session_id = ""
    libpsi_mode = False
    _sent_link = ""
    link_hold: libpsi_engine.PortHold | None = None

    def _exchange(self, stub, reply, state) -> dict[str, Any]:
        assert self.table is not None and self.pool is not None
        pool = self.pool  # the narrowed pool, for the closures below
        p = self.params
        bs = p.batch_size
        rsa = p.protocol == "rsa"
        self.session_id = reply.session_id
        peer_n = int(reply.input_size)
        if state and state.get("session_id") == reply.session_id:
            self.resumed = True
            self.state = state
            self.reporter.log(f"psi: resuming session {reply.session_id[:8]} from its checkpoint")
        else:
            self.state = {
                "session_id": reply.session_id,
                "job_id": self.cfg.job_id,
                "role": self.cfg.role,
                "protocol": p.protocol,
                "suite": p.suite,
                "batch_size": bs,
                "input": self.table.fingerprint(),
                "input_size": self.n,
                "peer_input_size": peer_n,
                "key": crypto.new_ecdh_key().hex(),
            }
            self.ckpt.reset(self.state)
        key = bytes.fromhex(self.state["key"])
        pub = (int.from_bytes(reply.rsa_n, "big"), int(reply.rsa_e)) if rsa else None
        leader_has_f = set(reply.have_follower_final)
        leader_has_l = set(reply.have_leader_final)
        nf, nl = batch_count(self.n, bs), batch_count(peer_n, bs)
        progress = _Progress(self.reporter, nf + nl)
        self.reporter.log(
            f"psi: follower connected to {self.cfg.peer_address}: {self.n} ids here, {peer_n} at the leader, protocol {p.protocol}"
        )
        watcher = threading.Thread(target=self._watch, args=(stub, reply.session_id), daemon=True, name="psi-watch")
        watcher.start()
        sid = reply.session_id

        def call(method, req, what):
            if self._stop.is_set():
                raise self.failure or PeerError("stopped")
            try:
                return method(req, timeout=self.remaining())
            except grpc.RpcError as exc:
                raise self._rpc_error(exc, what) from None

        def own_batch(i: int, ids: list[str]) -> None:
            have = self.ckpt.has(OWN, i)
            if have and i in leader_has_f:
                progress.step()
                return
            if rsa:
                if not have:
                    assert pub is not None  # set when rsa
                    blinded, unblind = pool.run(crypto.rsa_blind, pub, ids)
                    resp = call(
                        stub.Exchange,
                        psi_pb2.PsiBatch(session_id=sid, index=i, values=blinded, count=len(ids)),
                        f"exchange of batch {i}",
                    )
                    if not crypto.rsa_verify_sample(pub, blinded, resp.values):
                        raise PeerError("the leader's signatures do not verify with its public key")
                    finals = crypto.rsa_unblind(pub, resp.values, unblind)
                    self.ckpt.write(OWN, i, finals)
                else:
                    finals = self.ckpt.read(OWN, i)
                call(
                    stub.Push,
                    psi_pb2.PsiBatch(session_id=sid, index=i, values=finals, count=len(ids), kind=KIND_FOLLOWER_FINAL),
                    f"push of batch {i}",
                )
            else:
                enc = pool.run(crypto.ecdh_encrypt_ids, key, ids, p.suite)
                resp = call(
                    stub.Exchange,
                    psi_pb2.PsiBatch(session_id=sid, index=i, values=enc, count=len(ids)),
                    f"exchange of batch {i}",
                )
                if len(resp.values) != len(ids) * crypto.DIGEST:
                    raise PeerError(f"the leader answered batch {i} with the wrong number of values")
                self.ckpt.write(OWN, i, resp.values)
            progress.step()

        def leader_batch(j: int) -> None:
            have = self.ckpt.has(PEER, j)
            if have and (rsa or j in leader_has_l):
                progress.step()
                return
            if not have:
                resp = call(stub.Pull, psi_pb2.PsiBatchRef(session_id=sid, index=j), f"pull of leader batch {j}")
                count = batch_len(peer_n, bs, j)
                if rsa:
                    if len(resp.values) != count * crypto.DIGEST:
                        raise PeerError(f"the leader sent batch {j} with the wrong number of values")
                    finals = resp.values
                else:
                    if len(resp.values) != count * crypto.POINT:
                        raise PeerError(f"the leader sent batch {j} with the wrong number of values")
                    try:
                        finals = crypto.ecdh_final(pool.run(crypto.ecdh_reencrypt, key, resp.values))
                    except crypto.CryptoError as exc:
                        raise PeerError(f"the leader sent bad values: {exc}") from None
                self.ckpt.write(PEER, j, finals)
            else:
                finals = self.ckpt.read(PEER, j)
            if not rsa:
                call(
                    stub.Push,
                    psi_pb2.PsiBatch(
                        session_id=sid, index=j, values=finals, count=batch_len(peer_n, bs, j), kind=KIND_LEADER_FINAL
                    ),
                    f"push of leader batch {j}",
                )
            progress.step()

        inflight = max(2, 2 * max(1, p.workers))
        sem = threading.BoundedSemaphore(inflight)
        errors: list[BaseException] = []

        def wrap(fn, *args):
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - first error wins, re-raised below
                errors.append(exc)
                self._stop.set()
            finally:
                sem.release()

        with cf.ThreadPoolExecutor(inflight, thread_name_prefix="psi-batch") as ex:
            j = 0
            for i, ids in enumerate(self.table.iter_ids(bs)):
                for fn, args in ((own_batch, (i, ids)),) + (((leader_batch, (j,)),) if j < nl else ()):
                    while not sem.acquire(timeout=0.5):
                        if self._stop.is_set():
                            break
                    if self._stop.is_set():
                        break
                    ex.submit(wrap, fn, *args)
                if j < nl:
                    j += 1
                if self._stop.is_set():
                    break
            while j < nl and not self._stop.is_set():
                while not sem.acquire(timeout=0.5):
                    if self._stop.is_set():
                        break
                if self._stop.is_set():
                    break
                ex.submit(wrap, leader_batch, j)
                j += 1
        if errors:
            first = errors[0]
            if self.failure is not None and isinstance(first, PeerError):
                raise self.failure
            raise first
        if self.failure is not None:
            raise self.failure
        rows, digest = self.intersect(peer_n)
        self.finishing = True
        fin = call(stub.Finish, psi_pb2.PsiFinish(session_id=sid, intersection_size=len(rows), digest=digest), "finish")
        if not fin.ok:
            raise PeerError(fin.error)
        self._stop.set()
        return self.write_output(rows, peer_n, {"x25519": crypto.x25519_backend()} if not rsa else {})


def run_builtin(
    cfg: JobConfig, params: PsiParams, reporter: Reporter, worker: libpsi_engine.Worker | None = None
) -> dict[str, Any]:
    """Run this side; `worker` is a libpsi worker started early (``libpsi_engine.prestart``), if any."""
    role = _Leader if cfg.is_leader else _Follower
    return role(cfg, params, reporter, worker).run()
