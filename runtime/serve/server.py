"""The two serving runtimes and the mutual-TLS stream between them.

The leader listens on its runtime port (mutual TLS) for the follower's
``Serving.Connect`` stream and, on a second address, for its own installation's
``ServingApi.Predict`` calls. Each predict call becomes one ``PartialRequest`` on
the stream, sent at once, so many are in flight together (pipelined); the
follower's worker takes every request queued at that moment, looks all their ids
up in one store query and evaluates its half once for all of them (batched).

A follower that is not connected makes a predict call fail at once; one that does
not answer within the deadline (default 200 ms) makes it fail then. Either is a
:class:`Unavailable`, which the API turns into gRPC UNAVAILABLE (HTTP 503 upstream).
The follower reconnects by itself when the stream drops (leader restarted, network
cut); it sees only ids, never a score.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from fedsite_proto.runtime.v1 import serve_pb2 as pb
from fedsite_proto.runtime.v1 import serve_pb2_grpc as pb_grpc
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError
from runtime.serve.model import NNHalf, TreeHalf, supplied_frame
from runtime.serve.stats import Stats
from runtime.serve.store import FeatureStore
from runtime.tls import NO_PORT_SHARING, add_port, open_channel
from runtime.train.link import RECONNECT_OPTIONS, SERVER_OPTIONS

log = logging.getLogger("fedsite.runtime.serve")

PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 256
_END = object()

UNKNOWN_TO_PARTNER = "unknown_to_partner"
UNKNOWN_TO_LEADER = "unknown_to_leader"
BAD_FEATURES = "bad_features"


class Unavailable(Exception):
    """The partner's serving runtime is down, not connected, or too slow: the call fails now."""


class BadRequest(Exception):
    """The predict call itself is wrong (names what)."""


@dataclass(frozen=True)
class ServeParams:
    model_dir: str
    data_path: str
    api_address: str = "127.0.0.1:0"
    api_advertise: str = ""  # the address to report for api_address ("" : the bound one)
    api_token: str = ""
    deadline_ms: float = 200.0
    max_ids: int = 10_000
    report_every_s: float = 10.0
    retry_max_s: float = 2.0
    tf_threads: int = 1


def parse_serve_params(cfg: JobConfig) -> ServeParams:
    raw = dict(cfg.serve)
    known = {f for f in ServeParams.__dataclass_fields__}
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(f"serve: unknown keys {', '.join(extra)} (known: {', '.join(sorted(known))})")
    if not isinstance(raw.get("model_dir"), str) or not raw["model_dir"]:
        raise ConfigError("serve.model_dir: required (this side's half of the model version)")
    for key, lo, hi in (
        ("deadline_ms", 1.0, 600_000.0),
        ("report_every_s", 0.05, 86_400.0),
        ("retry_max_s", 0.05, 600.0),
    ):
        v = raw.get(key, getattr(ServeParams, key))
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(f"serve.{key}: must be a number from {lo:g} to {hi:g}, got {v!r}")
        raw[key] = float(v)
    for key, hi in (("max_ids", 1_000_000), ("tf_threads", 1024)):
        v = raw.get(key, getattr(ServeParams, key))
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise ConfigError(f"serve.{key}: must be an integer from 1 to {hi}, got {v!r}")
    for key in ("api_address", "api_advertise", "api_token", "data_path"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"serve.{key}: must be a string")
    if cfg.is_leader and not raw.get("api_token") and not cfg.allow_insecure:
        raise ConfigError("serve.api_token: required (the token the installation's web process presents)")
    raw.setdefault("data_path", cfg.data.path)
    return ServeParams(**raw)


def to_tensor(a: np.ndarray) -> pb.Tensor:
    a = np.ascontiguousarray(a, dtype="<f4")
    return pb.Tensor(rows=a.shape[0], cols=a.shape[1], data=a.tobytes())


def from_tensor(t: pb.Tensor) -> np.ndarray:
    if len(t.data) != 4 * t.rows * t.cols:
        raise PeerError(f"partner sent a malformed tensor ({t.rows}x{t.cols}, {len(t.data)} bytes)")
    return np.frombuffer(t.data, dtype="<f4").reshape(t.rows, t.cols)


def make_hello(cfg: JobConfig, half: NNHalf | TreeHalf) -> pb.Hello:
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        job_id=cfg.job_id,
        role=cfg.role,
        model_job_id=half.model_job_id,
        family=half.family,
        width=half.follower_width,
    )


def check_hello(mine: pb.Hello, theirs: pb.Hello) -> None:
    """Both sides check the other's hello; a mismatch is a config error named on both."""
    if theirs.protocol_version != PROTOCOL_VERSION:
        raise PeerError(
            f"the partner speaks serving protocol {theirs.protocol_version}, this runtime {PROTOCOL_VERSION}"
        )
    if theirs.role == mine.role:
        raise ConfigError(f"role: both sides are configured as {mine.role}")
    if theirs.job_id != mine.job_id:
        raise ConfigError(f"job_id: this side serves job {mine.job_id}, the partner job {theirs.job_id}")
    if theirs.model_job_id != mine.model_job_id or theirs.family != mine.family:
        raise ConfigError(
            f"the two sides serve different models: this side {mine.family} from training job {mine.model_job_id}, "
            f"the partner {theirs.family} from {theirs.model_job_id}"
        )
    if theirs.width != mine.width:
        raise ConfigError(
            f"the follower's half outputs {theirs.width or mine.width} values per row, the leader's expects {mine.width or theirs.width}"
        )


def build_store(cfg: JobConfig, params: ServeParams, half: NNHalf | TreeHalf) -> FeatureStore:
    """This side's table, encoded for its half, into ``<output_dir>/serve/features.sqlite``."""
    from pathlib import Path

    from runtime.train.data import read_table

    table = read_table(params.data_path, cfg.data.id_column, cfg.data.label_column, need_label=False)
    return FeatureStore.build(
        Path(cfg.output_dir) / "serve" / "features.sqlite", list(table.ids), half.encode(table.features)
    )


# -- leader ----------------------------------------------------------------------------


class _Session:
    """One connected follower stream: what to send it and the requests waiting for its answers."""

    _ids = itertools.count(1)

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.out: queue.Queue[Any] = queue.Queue()
        self.pending: dict[int, futures.Future[pb.PartialReply]] = {}
        self.lock = threading.Lock()
        self.alive = True
        self.why = ""

    def ask(self, ids: list[str]) -> tuple[int, futures.Future[pb.PartialReply]]:
        rid = next(self._ids)
        fut: futures.Future[pb.PartialReply] = futures.Future()
        with self.lock:
            if not self.alive:
                raise Unavailable(f"the partner's serving runtime is not connected ({self.why})")
            self.pending[rid] = fut
        self.out.put(pb.LeaderMessage(request=pb.PartialRequest(request_id=rid, ids=ids)))
        return rid, fut

    def forget(self, rid: int) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def deliver(self, reply: pb.PartialReply) -> None:
        with self.lock:
            fut = self.pending.pop(reply.request_id, None)
        if fut is not None:
            fut.set_result(reply)

    def close(self, why: str) -> None:
        with self.lock:
            if not self.alive:
                return
            self.alive, self.why = False, why
            waiting, self.pending = list(self.pending.values()), {}
        for fut in waiting:
            fut.set_exception(Unavailable(f"lost the partner's serving runtime: {why}"))
        self.out.put(_END)


class LeaderServing:
    """The leader's serving runtime: the follower's stream, the predict logic and the API server."""

    def __init__(
        self, cfg: JobConfig, params: ServeParams, half: NNHalf | TreeHalf, store: FeatureStore, stats: Stats
    ) -> None:
        self.cfg, self.params, self.half, self.store, self.stats = cfg, params, half, store, stats
        self.hello = make_hello(cfg, half)
        self._session: _Session | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="serve-peer"),
            options=[*SERVER_OPTIONS, NO_PORT_SHARING],
        )
        pb_grpc.add_ServingServicer_to_server(_PeerServicer(self), self.server)
        try:
            self.port = add_port(self.server, cfg)
        except RuntimeError as exc:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address}: {exc}") from None
        if not self.port:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address} (in use?)")
        self.api = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="serve-api"),
            options=[*SERVER_OPTIONS, NO_PORT_SHARING],
        )
        pb_grpc.add_ServingApiServicer_to_server(_ApiServicer(self), self.api)
        try:
            self.api_port = self.api.add_insecure_port(params.api_address)
        except RuntimeError as exc:
            raise ConfigError(f"serve.api_address: cannot listen on {params.api_address}: {exc}") from None
        if not self.api_port:
            raise ConfigError(f"serve.api_address: cannot listen on {params.api_address} (in use?)")
        host = params.api_address.rpartition(":")[0] or "127.0.0.1"
        self.api_address = params.api_advertise or f"{host}:{self.api_port}"

    def start(self) -> None:
        self.server.start()
        self.api.start()

    def stop(self, grace_s: float = 1.0) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close("the leader's serving runtime is stopping")
        self.api.stop(grace=grace_s).wait(grace_s + 1)
        self.server.stop(grace=grace_s).wait(grace_s + 1)

    @property
    def partner_connected(self) -> bool:
        s = self._session
        return s is not None and s.alive

    # -- the follower's stream --------------------------------------------------
    def connect(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        if first.WhichOneof("body") != "hello":
            yield pb.LeaderMessage(failure=pb.Failure(kind="peer", message="protocol error: expected hello"))
            return
        try:
            check_hello(self.hello, first.hello)
        except (ConfigError, PeerError) as exc:
            log.error("serving: refused the follower's stream: %s", exc)
            kind = "config" if isinstance(exc, ConfigError) else "peer"
            yield pb.LeaderMessage(failure=pb.Failure(kind=kind, message=str(exc)))
            return
        yield pb.LeaderMessage(hello=self.hello)
        session = _Session(context.peer())
        with self._lock:
            old, self._session = self._session, session
        if old is not None:
            old.close("the follower reconnected")
        context.add_callback(lambda: self._lost(session, "the stream ended"))
        threading.Thread(
            target=self._read, args=(session, request_iterator), name="serve-leader-recv", daemon=True
        ).start()
        self.connected.set()
        log.info("serving: the follower is connected (%s)", session.peer)
        while True:
            msg = session.out.get()
            if msg is _END:
                return
            yield msg

    def _read(self, session: _Session, iterator: Any) -> None:
        why = "the follower closed the stream"
        try:
            for msg in iterator:
                body = msg.WhichOneof("body")
                if body == "reply":
                    session.deliver(msg.reply)
                elif body == "failure":
                    why = f"the follower failed: {msg.failure.message}"
                    break
        except grpc.RpcError as exc:
            why = f"the stream broke ({exc.code().name if hasattr(exc, 'code') else exc})"
        except Exception as exc:  # noqa: BLE001 - any transport failure ends this session only
            why = f"{exc.__class__.__name__}: {exc}"
        self._lost(session, why)

    def _lost(self, session: _Session, why: str) -> None:
        with self._lock:
            if self._session is session:
                self._session = None
                self.connected.clear()
        if session.alive:
            log.warning("serving: lost the follower: %s", why)
        session.close(why)

    # -- predict ----------------------------------------------------------------
    def predict(
        self, ids: list[str], features: dict[str, dict[str, str]] | None = None, deadline_ms: float = 0.0
    ) -> list[dict[str, Any]]:
        """Scores (or per-id reasons why not) for `ids`, in order; Unavailable if the partner cannot answer in time."""
        t0 = time.perf_counter()
        features = features or {}
        deadline_s = (min(deadline_ms, self.params.deadline_ms) if deadline_ms > 0 else self.params.deadline_ms) / 1000
        if not ids:
            raise BadRequest("ids: give at least one id")
        if len(ids) > self.params.max_ids:
            raise BadRequest(f"ids: at most {self.params.max_ids} per request, got {len(ids)}")
        for i in ids:
            if not i or len(i) > MAX_ID_LENGTH:
                raise BadRequest(f"ids: every id must be 1 to {MAX_ID_LENGTH} characters, got {i[:40]!r}")
        stray = sorted(set(features) - set(ids))
        if stray:
            raise BadRequest(f"features: given for ids not asked for: {', '.join(stray[:5])}")
        out: list[dict[str, Any]] = [{"id": i} for i in ids]
        known, stored = self.store.get(ids)
        rows = np.empty((len(ids), self.store.width), dtype=self.store.dtype)
        usable = np.zeros(len(ids), dtype=bool)
        k = 0
        for pos, i in enumerate(ids):
            if known[pos]:
                rows[pos] = stored[k]
                k += 1
            if i in features:
                try:
                    rows[pos] = self.half.encode(supplied_frame(features[i], self.half.columns))[0]
                except DataError as exc:
                    out[pos].update(ok=False, reason=BAD_FEATURES, error=f"bad features for {i!r}: {exc}")
                    continue
            elif not known[pos]:
                out[pos].update(
                    ok=False,
                    reason=UNKNOWN_TO_LEADER,
                    error=f"{i!r} is not registered on this side and no features were given",
                )
                continue
            usable[pos] = True
        ask = [ids[p] for p in np.flatnonzero(usable)]
        if ask:
            session = self._session
            if session is None or not session.alive:
                raise Unavailable("the partner's serving runtime is not connected")
            rid, fut = session.ask(ask)
            remaining = deadline_s - (time.perf_counter() - t0)
            try:
                reply = fut.result(timeout=max(remaining, 0.0))
            except futures.TimeoutError:
                session.forget(rid)
                raise Unavailable(
                    f"the partner's serving runtime did not answer within {deadline_s * 1000:.0f} ms"
                ) from None
            if reply.error:
                raise Unavailable(f"the partner's serving runtime could not answer: {reply.error}")
            theirs_known = np.array(reply.known, dtype=bool)
            if len(theirs_known) != len(ask):
                raise Unavailable("protocol error: the partner answered for a different number of ids")
            n_both = int(theirs_known.sum())
            theirs = self._decode(reply, n_both)
            positions = np.flatnonzero(usable)
            both = positions[theirs_known]
            scores = self.half.leader_scores(rows[both], theirs)
            for p, s in zip(both, scores, strict=True):
                out[p].update(ok=True, score=float(s))
            for p in positions[~theirs_known]:
                out[p].update(ok=False, reason=UNKNOWN_TO_PARTNER, error=f"{ids[p]!r} is unknown to the partner")
        served = sum(1 for r in out if r.get("ok"))
        self.stats.record(served, (time.perf_counter() - t0) * 1000)
        return out

    def _decode(self, reply: pb.PartialReply, rows: int) -> np.ndarray:
        if isinstance(self.half, NNHalf):
            a = from_tensor(reply.activations)
            if a.shape != (rows, self.half.peer_width):
                raise Unavailable(f"protocol error: the partner sent {a.shape} activations for {rows} rows")
            return a
        count = rows * self.half.splits
        if len(reply.decisions) != (count + 7) // 8:
            raise Unavailable("protocol error: the partner's split decisions have the wrong length")
        bits = np.unpackbits(np.frombuffer(reply.decisions, dtype=np.uint8), count=count).astype(bool)
        return bits.reshape(rows, self.half.splits)


class _PeerServicer(pb_grpc.ServingServicer):
    def __init__(self, leader: LeaderServing) -> None:
        self.leader = leader

    def Connect(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self.leader.connect(request_iterator, context)


class _ApiServicer(pb_grpc.ServingApiServicer):
    def __init__(self, leader: LeaderServing) -> None:
        self.leader = leader

    def _authorize(self, context: grpc.ServicerContext) -> None:
        token = self.leader.params.api_token
        if not token:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(str(given).encode(), f"Bearer {token}".encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid serving token is required")

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        self._authorize(context)
        features = {i: dict(f.values) for i, f in request.features.items()}
        t0 = time.perf_counter()
        try:
            results = self.leader.predict(list(request.ids), features, request.deadline_ms)
        except BadRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Unavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.PredictReply(
            predictions=[
                pb.Prediction(
                    id=r["id"],
                    ok=bool(r.get("ok")),
                    score=r.get("score", 0.0),
                    reason=r.get("reason", ""),
                    error=r.get("error", ""),
                )
                for r in results
            ],
            elapsed_ms=(time.perf_counter() - t0) * 1000,
        )

    def Stats(self, request, context):  # noqa: N802 - gRPC method name
        self._authorize(context)
        s = self.leader.stats.snapshot()
        return pb.StatsReply(
            role="leader",
            partner_connected=self.leader.partner_connected,
            requests=s["requests"],
            predictions=s["predictions"],
            p50_ms=s["p50_ms"],
            p99_ms=s["p99_ms"],
            predictions_per_hour=s["predictions_per_hour"],
        )


# -- follower --------------------------------------------------------------------------


class FollowerServing:
    """The follower's serving runtime: keeps a stream open to the leader and answers its requests."""

    def __init__(
        self, cfg: JobConfig, params: ServeParams, half: NNHalf | TreeHalf, store: FeatureStore, stats: Stats
    ) -> None:
        self.cfg, self.params, self.half, self.store, self.stats = cfg, params, half, store, stats
        self.hello = make_hello(cfg, half)
        self.work: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._call: Any = None
        self._threads = [
            threading.Thread(target=self._connect_loop, name="serve-follower-link", daemon=True),
            threading.Thread(target=self._worker, name="serve-follower-work", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, grace_s: float = 1.0) -> None:
        self._stop.set()
        self.work.put(_END)
        call = self._call
        if call is not None:
            call.cancel()
        for t in self._threads:
            t.join(grace_s + 2)

    def _connect_loop(self) -> None:
        backoff = 0.1
        said = ""
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.1
            except ConfigError as exc:
                self.fatal = exc
                log.error("serving: %s", exc)
                self._stop.set()
                return
            except Exception as exc:  # noqa: BLE001 - any link failure: retry with backoff
                detail = exc.details() if isinstance(exc, grpc.RpcError) and hasattr(exc, "details") else exc
                text = f"{exc.__class__.__name__}: {detail}"
                if text != said:
                    log.warning("serving: no stream to the leader (%s); retrying", text)
                    said = text
            finally:
                self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(self.params.retry_max_s, backoff * 2)

    def _session(self) -> None:
        channel = open_channel(self.cfg, extra=RECONNECT_OPTIONS)
        out: queue.Queue[Any] = queue.Queue()

        def requests() -> Any:
            yield pb.FollowerMessage(hello=self.hello)
            while True:
                msg = out.get()
                if msg is _END:
                    return
                yield msg

        try:
            grpc.channel_ready_future(channel).result(timeout=max(self.params.retry_max_s, 1.0))
            call = pb_grpc.ServingStub(channel).Connect(requests())
            self._call = call
            first = next(call)
            body = first.WhichOneof("body")
            if body == "failure":
                if first.failure.kind == "config":
                    raise ConfigError(f"the leader refused this serving runtime: {first.failure.message}")
                raise PeerError(first.failure.message)
            if body != "hello":
                raise PeerError("protocol error: expected the leader's hello")
            try:
                check_hello(self.hello, first.hello)
            except ConfigError as exc:
                out.put(pb.FollowerMessage(failure=pb.Failure(kind="config", message=str(exc))))
                raise
            self.connected.set()
            log.info("serving: connected to the leader at %s", self.cfg.peer_address)
            for msg in call:
                if msg.WhichOneof("body") == "request":
                    self.work.put((msg.request, out))
                elif msg.WhichOneof("body") == "failure":
                    raise PeerError(f"the leader failed: {msg.failure.message}")
        finally:
            out.put(_END)
            self._call = None
            channel.close()

    def _worker(self) -> None:
        while True:
            first = self.work.get()
            if first is _END:
                return
            batch = [first]
            while True:  # every request waiting now goes into this one evaluation
                try:
                    item = self.work.get_nowait()
                except queue.Empty:
                    break
                if item is _END:
                    self.work.put(_END)
                    break
                batch.append(item)
            t0 = time.perf_counter()
            try:
                counts = self._answer(batch)
            except Exception as exc:  # noqa: BLE001 - answer every request with the reason, keep serving
                log.exception("serving: could not evaluate a batch")
                for req, out in batch:
                    out.put(pb.FollowerMessage(reply=pb.PartialReply(request_id=req.request_id, error=str(exc))))
                continue
            per = (time.perf_counter() - t0) * 1000
            for m in counts:
                self.stats.record(m, per)  # rows this side evaluated for the partner (it never sees scores)

    def _answer(self, batch: list[tuple[pb.PartialRequest, queue.Queue[Any]]]) -> list[int]:
        counts: list[int] = []
        all_ids = [i for req, _ in batch for i in req.ids]
        known, rows = self.store.get(all_ids)
        output = self.half.follower_output(rows)
        start_id = start_row = 0
        for req, out in batch:
            n = len(req.ids)
            k = known[start_id : start_id + n]
            m = int(k.sum())
            part = output[start_row : start_row + m]
            if isinstance(self.half, NNHalf):
                reply = pb.PartialReply(request_id=req.request_id, known=k.tolist(), activations=to_tensor(part))
            else:
                reply = pb.PartialReply(
                    request_id=req.request_id, known=k.tolist(), decisions=np.packbits(part.ravel()).tobytes()
                )
            out.put(pb.FollowerMessage(reply=reply))
            counts.append(m)
            start_id += n
            start_row += m
        return counts
