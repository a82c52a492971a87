"""The leader-follower stream: one bidirectional gRPC call over mutual TLS.

The leader serves ``SplitNN.Exchange``; the follower calls it. Both ends see the
same small interface: ``send(msg)``, ``recv(timeout)`` and ``fail(exc)``. A
reader thread moves incoming messages into a queue so the training loop can wait
with a timeout, and so a partner that disappears (killed, network cut) surfaces
as a :class:`PeerError` naming what happened instead of a hang.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from fedsite_proto.runtime.v1 import train_pb2 as pb
from fedsite_proto.runtime.v1 import train_pb2_grpc as pb_grpc
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError, RuntimeJobError
from runtime.tls import MAX_MESSAGE_BYTES, NO_PORT_SHARING, add_port, open_channel

PROTOCOL_VERSION = 2  # 2: EpochEnd.best_epoch, early-stopping activations
_END = object()
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# The follower pings every 20 s (tls.CHANNEL_OPTIONS); while one side computes for longer
# (a SecureBoost histogram level) no data flows, and a server with gRPC's default ping
# policy answers those pings with GOAWAY ("too many pings"), ending the stream.
# Servers also take the channels' message size (gRPC's server default is 4 MB; a level of
# encrypted histograms is larger).
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


def to_tensor(a: np.ndarray) -> pb.Tensor:
    a = np.ascontiguousarray(a, dtype="<f4")
    return pb.Tensor(rows=a.shape[0], cols=a.shape[1], data=a.tobytes())


def from_tensor(t: pb.Tensor) -> np.ndarray:
    if len(t.data) != 4 * t.rows * t.cols:
        raise PeerError(f"partner sent a malformed tensor ({t.rows}x{t.cols}, {len(t.data)} bytes)")
    return np.frombuffer(t.data, dtype="<f4").reshape(t.rows, t.cols)


def failure_of(exc: BaseException) -> pb.Failure:
    kind = (
        "data"
        if isinstance(exc, DataError)
        else "config"
        if isinstance(exc, ConfigError)
        else "peer"
        if isinstance(exc, PeerError)
        else "internal"
    )
    text = str(exc) if isinstance(exc, RuntimeJobError) else f"{exc.__class__.__name__}: {exc}"
    return pb.Failure(kind=kind, message=text)


def raise_failure(f: pb.Failure, partner: str) -> None:
    text = f"the partner ({partner}) failed: {f.message}"
    if f.kind == "data":
        raise DataError(text)
    if f.kind == "config":
        raise ConfigError(text)
    raise PeerError(text)


class _Link:
    partner = "partner"

    def __init__(self) -> None:
        self._in: queue.Queue[Any] = queue.Queue()
        self._out: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self.peer_failed = False

    def send(self, msg: Any) -> None:
        self._out.put(msg)

    def recv(self, timeout: float, what: str = "a message") -> Any:
        try:
            item = self._in.get(timeout=timeout)
        except queue.Empty:
            raise PeerError(
                f"no answer from the {self.partner} runtime for {timeout:.0f} s while waiting for {what}"
            ) from None
        if isinstance(item, BaseException):
            self.peer_failed = True
            raise PeerError(f"lost the connection to the {self.partner} runtime while waiting for {what}: {item}")
        if item is _END:
            self.peer_failed = True
            raise PeerError(f"the {self.partner} runtime closed the connection while we were waiting for {what}")
        if item.WhichOneof("body") == "failure":
            self.peer_failed = True
            raise_failure(item.failure, self.partner)
        return item

    def _pump(self, iterator: Any) -> None:
        try:
            for msg in iterator:
                self._in.put(msg)
            self._in.put(_END)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            self._in.put(PeerError(f"{code.name if code else 'error'}: {detail}"))
        except Exception as exc:  # noqa: BLE001 - any transport failure becomes a PeerError at recv
            self._in.put(PeerError(f"{exc.__class__.__name__}: {exc}"))


class LeaderLink(_Link):
    """Serves one follower stream on the config's listen address."""

    partner = "follower"

    def __init__(self, cfg: JobConfig) -> None:
        super().__init__()
        self._connected = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[*RECONNECT_OPTIONS, *SERVER_OPTIONS, NO_PORT_SHARING],
        )
        self._register(self.server)
        try:
            self.port = add_port(self.server, cfg)
        except RuntimeError as exc:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address}: {exc}") from None
        if not self.port:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address} (in use?)")
        self.server.start()

    def _register(self, server: grpc.Server) -> None:
        """Add this protocol's servicer (a sibling protocol overrides this and `_failure`)."""
        pb_grpc.add_SplitNNServicer_to_server(_Servicer(self), server)

    def _failure(self, exc: BaseException) -> Any:
        return pb.LeaderMessage(failure=failure_of(exc))

    def accept(self, timeout: float) -> None:
        if not self._connected.wait(timeout):
            raise PeerError(f"the follower runtime did not connect within {timeout:.0f} s")

    def _serve(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            if self._busy:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "this job's leader already has a follower stream")
            self._busy = True

        def on_rpc_end() -> None:
            # The call is over: wake the reader and end this handler, whose pool thread is joined at exit.
            self._in.put(PeerError("the stream was cancelled"))
            self._out.put(_END)

        context.add_callback(on_rpc_end)
        threading.Thread(target=self._pump, args=(request_iterator,), name="leader-recv", daemon=True).start()
        self._connected.set()
        while True:
            msg = self._out.get()
            if msg is _END:
                self._done.set()
                return
            yield msg

    def close(self, grace_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.put(_END)
        if self._connected.is_set():
            self._done.wait(grace_s)
        self.server.stop(grace=1.0).wait(grace_s)

    def fail(self, exc: BaseException) -> None:
        if not self.peer_failed and self._connected.is_set():
            self.send(self._failure(exc))
        self.close(grace_s=3.0)


class _Servicer(pb_grpc.SplitNNServicer):
    def __init__(self, link: LeaderLink) -> None:
        self.link = link

    def Exchange(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self.link._serve(request_iterator, context)


class FollowerLink(_Link):
    """Connects to the leader, retrying until it listens or the timeout passes."""

    partner = "leader"

    def __init__(self, cfg: JobConfig, timeout: float) -> None:
        super().__init__()
        self.channel = open_channel(cfg, extra=RECONNECT_OPTIONS)
        deadline = time.monotonic() + timeout
        try:
            grpc.channel_ready_future(self.channel).result(timeout=max(0.1, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise PeerError(
                f"cannot reach the leader runtime at {cfg.peer_address} within {timeout:.0f} s "
                "(not listening, or the TLS handshake failed: check the pinned certificates)"
            ) from None
        self.call = self._open_call(self.channel)
        threading.Thread(target=self._pump, args=(self.call,), name="follower-recv", daemon=True).start()

    def _open_call(self, channel: grpc.Channel) -> Any:
        """Open this protocol's stream (a sibling protocol overrides this and `_failure`)."""
        return pb_grpc.SplitNNStub(channel).Exchange(self._requests())

    def _failure(self, exc: BaseException) -> Any:
        return pb.FollowerMessage(failure=failure_of(exc))

    def _requests(self) -> Any:
        while True:
            msg = self._out.get()
            if msg is _END:
                return
            yield msg

    def close(self, grace_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.put(_END)
        # Let the leader finish its side of the call (its Done) before closing the channel.
        self._wait_call(grace_s)
        self.channel.close()

    def _wait_call(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.call.done():
            time.sleep(0.02)

    def fail(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.peer_failed:
            self.send(self._failure(exc))
        self._out.put(_END)
        self._wait_call(3.0)
        self.call.cancel()
        self.channel.close()
