"""The SecureBoost stream: the split-NN link's transport with the tree protocol's messages."""

from __future__ import annotations

from typing import Any

import grpc

from fedsite_proto.runtime.v1 import tree_pb2 as pb
from fedsite_proto.runtime.v1 import tree_pb2_grpc as pb_grpc
from runtime.train.link import FollowerLink, LeaderLink, failure_of

PROTOCOL_VERSION = 1


def _tree_failure(exc: BaseException) -> pb.Failure:
    f = failure_of(exc)
    return pb.Failure(kind=f.kind, message=f.message)


class TreeLeaderLink(LeaderLink):
    """Serves the follower's `SecureBoost.Exchange` stream."""

    def _register(self, server: grpc.Server) -> None:
        pb_grpc.add_SecureBoostServicer_to_server(_Servicer(self), server)

    def _failure(self, exc: BaseException) -> Any:
        return pb.LeaderMessage(failure=_tree_failure(exc))


class _Servicer(pb_grpc.SecureBoostServicer):
    def __init__(self, link: TreeLeaderLink) -> None:
        self.link = link

    def Exchange(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self.link._serve(request_iterator, context)


class TreeFollowerLink(FollowerLink):
    """Opens the `SecureBoost.Exchange` stream to the leader."""

    def _open_call(self, channel: grpc.Channel) -> Any:
        return pb_grpc.SecureBoostStub(channel).Exchange(self._requests())

    def _failure(self, exc: BaseException) -> Any:
        return pb.FollowerMessage(failure=_tree_failure(exc))
