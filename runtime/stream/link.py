"""The stream-join session: the split-NN link's mutual-TLS transport with the stream protocol's messages.

Unlike training, losing the partner is not the end of a stream job: the survivor
goes back to the last committed block and waits for the partner to return, so a
lost connection is told apart (:class:`LinkLost`) from a partner's failure report.
"""

from __future__ import annotations

import queue
from typing import Any

import grpc

from fedsite_proto.runtime.v1 import stream_pb2 as pb
from fedsite_proto.runtime.v1 import stream_pb2_grpc as pb_grpc
from runtime.errors import PeerError
from runtime.train.link import _END, FollowerLink, LeaderLink, failure_of, raise_failure

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


class StreamLeaderLink(_StreamRecv, LeaderLink):
    """Serves the follower's `StreamJoin.Exchange` stream."""

    def _register(self, server: grpc.Server) -> None:
        pb_grpc.add_StreamJoinServicer_to_server(_Servicer(self), server)

    def _failure(self, exc: BaseException) -> Any:
        return pb.StreamLeaderMessage(failure=_failure(exc))

    def abort(self) -> None:
        """Drop the connection at once, telling the partner nothing (a crash)."""
        self._closed = True
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
        self.call.cancel()
        self.channel.close()
