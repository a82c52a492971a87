"""The stream-join session: the split-NN link's mutual-TLS transport with the stream protocol's messages.

Unlike training, losing the partner is not the end of a stream job: the survivor
goes back to the last committed block and waits for the partner to return, so a
lost connection is told apart (:class:`LinkLost`) from a partner's failure report.
"""

from __future__ import annotations

import queue
import threading
from concurrent import futures
from typing import Any

import grpc

from fedsite_proto.runtime.v1 import stream_pb2 as pb
from fedsite_proto.runtime.v1 import stream_pb2_grpc as pb_grpc
from runtime.config import JobConfig
from runtime.errors import ConfigError, PeerError
from runtime.tls import NO_PORT_SHARING, add_port
from runtime.train.link import _END, RECONNECT_OPTIONS, SERVER_OPTIONS, FollowerLink, failure_of, raise_failure

PROTOCOL_VERSION = 1


class LinkLost(PeerError):
    """The connection to the partner ended or went silent (the partner may come back)."""


class PartnerDone(Exception):
    """The partner stopped the job (not a failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _failure(exc: BaseException) -> pb.StreamFailure:
    f = failure_of(exc)
    return pb.StreamFailure(kind=f.kind, message=f.message)


class _StreamRecv:
    partner: str
    _in: queue.Queue[Any]
    peer_failed: bool

    def recv(self, timeout: float, what: str = "a message") -> Any:
        try:
            item = self._in.get(timeout=timeout)
        except queue.Empty:
            raise LinkLost(
                f"no answer from the {self.partner} runtime for {timeout:.0f} s while waiting for {what}"
            ) from None
        if isinstance(item, BaseException):
            self.peer_failed = True
            raise LinkLost(f"lost the connection to the {self.partner} runtime while waiting for {what}: {item}")
        if item is _END:
            self.peer_failed = True
            raise LinkLost(f"the {self.partner} runtime closed the connection while we were waiting for {what}")
        body = item.WhichOneof("body")
        if body == "failure":
            self.peer_failed = True
            raise_failure(item.failure, self.partner)
        if body == "done":
            self.peer_failed = True  # nothing more to tell it
            raise PartnerDone(item.done.reason)
        return item


class _Session:
    """One `Exchange` call: its queues, so a call that is over cannot touch the next one."""

    def __init__(self) -> None:
        self.inq: queue.Queue[Any] = queue.Queue()
        self.outq: queue.Queue[Any] = queue.Queue()
        self.finished = threading.Event()


class StreamLeaderLink(_StreamRecv):
    """Serves the follower's `StreamJoin.Exchange` calls for the whole job, one session at a time.

    The server stays bound across sessions (the port is the job's), and a new call from
    the follower supersedes the current one: a follower that was killed and restarted
    may call again before the leader has noticed that the old call is dead.
    """

    partner = "follower"

    def __init__(self, cfg: JobConfig) -> None:
        self.peer_failed = False
        self._lock = threading.Lock()
        self._current: _Session | None = None
        self._arrivals: queue.Queue[_Session] = queue.Queue()
        self._in = queue.Queue()
        self._closed = False
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[*RECONNECT_OPTIONS, *SERVER_OPTIONS, NO_PORT_SHARING],
        )
        pb_grpc.add_StreamJoinServicer_to_server(_Servicer(self), self.server)
        try:
            self.port = add_port(self.server, cfg)
        except RuntimeError as exc:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address}: {exc}") from None
        if not self.port:
            raise ConfigError(f"listen_address: cannot listen on {cfg.listen_address} (in use?)")
        self.server.start()

    def _serve(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        session = _Session()
        with self._lock:
            old, self._current = self._current, session
        if old is not None:
            old.inq.put(PeerError("the follower opened a new session"))
            old.outq.put(_END)

        def on_rpc_end() -> None:
            # The call is over (finished, cancelled, or the server stopped): wake both queues, so neither this
            # handler's thread (joined by the server's pool at interpreter exit) nor a reader waits forever.
            session.inq.put(PeerError("the stream was cancelled"))
            session.outq.put(_END)

        context.add_callback(on_rpc_end)

        def pump() -> None:
            try:
                for msg in request_iterator:
                    session.inq.put(msg)
                session.inq.put(_END)
            except grpc.RpcError as exc:
                session.inq.put(PeerError(f"{exc.code().name if hasattr(exc, 'code') else 'error'}"))
            except Exception as exc:  # noqa: BLE001 - any transport failure becomes a LinkLost at recv
                session.inq.put(PeerError(f"{exc.__class__.__name__}: {exc}"))

        threading.Thread(target=pump, name="stream-leader-recv", daemon=True).start()
        self._arrivals.put(session)
        try:
            while True:
                msg = session.outq.get()
                if msg is _END:
                    return
                yield msg
        finally:
            session.finished.set()

    def accept(self, timeout: float) -> None:
        """Wait for the follower's next session (the newest if several arrived)."""
        try:
            session = self._arrivals.get(timeout=timeout)
            while not self._arrivals.empty():
                session = self._arrivals.get_nowait()
        except queue.Empty:
            raise PeerError(f"the follower runtime did not connect within {timeout:.0f} s") from None
        self._session = session
        self._in = session.inq
        self.peer_failed = False

    def send(self, msg: Any) -> None:
        self._session.outq.put(msg)

    def end_session(self, grace_s: float = 0.0) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.outq.put(_END)
            session.finished.wait(grace_s)

    def close(self, grace_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.end_session(grace_s)
        self.server.stop(grace=1.0).wait(grace_s)

    def fail(self, exc: BaseException) -> None:
        if not self.peer_failed and getattr(self, "_session", None) is not None:
            self.send(pb.StreamLeaderMessage(failure=_failure(exc)))
        self.close(grace_s=3.0)

    def abort(self) -> None:
        """Drop everything at once, telling the partner nothing (a crash)."""
        self._closed = True
        with self._lock:
            if self._current is not None:
                self._current.outq.put(_END)
        self.server.stop(0).wait(5)


class _Servicer(pb_grpc.StreamJoinServicer):
    def __init__(self, link: StreamLeaderLink) -> None:
        self.link = link

    def Exchange(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self.link._serve(request_iterator, context)


class StreamFollowerLink(_StreamRecv, FollowerLink):
    """Opens the `StreamJoin.Exchange` stream to the leader."""

    def _open_call(self, channel: grpc.Channel) -> Any:
        return pb_grpc.StreamJoinStub(channel).Exchange(self._requests())

    def _failure(self, exc: BaseException) -> Any:
        return pb.StreamFollowerMessage(failure=_failure(exc))

    def abort(self) -> None:
        """Drop the connection at once, telling the partner nothing (a crash)."""
        self._closed = True
        self._out.put(_END)
        self.call.cancel()
        self.channel.close()
