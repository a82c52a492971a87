"""Signed envelopes: what a workspace signs, and how a message is built for the wire.

The signature covers the message id, timestamp, sender and receiver workspace
ids, kind, sequence number, ticket id and the payload bytes exactly as sent, so
nothing in an envelope can be changed, replayed to another workspace or
attributed to another sender without breaking it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fedsite_proto.peer.v1 import peer_pb2

PROTOCOL = "fedsite.peer.v1"
HEARTBEAT = "heartbeat"


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def signing_bytes(env: peer_pb2.Envelope) -> bytes:
    head = json.dumps(
        [
            PROTOCOL,
            env.message_id,
            env.timestamp_ms,
            env.sender_workspace_id,
            env.receiver_workspace_id,
            env.kind,
            env.seq,
            env.ticket_id,
        ],
        separators=(",", ":"),
    ).encode()
    return head + b"\n" + env.payload


def handshake_signing_bytes(req: peer_pb2.HandshakeRequest) -> bytes:
    return json.dumps(
        [
            PROTOCOL,
            "handshake",
            req.invitation_id,
            req.timestamp_ms,
            req.installation,
            req.endpoint,
            req.ca_pem,
            req.workspace_id,
            req.workspace_slug,
            req.workspace_public_key,
        ],
        separators=(",", ":"),
    ).encode()


def build(
    partner: Any,
    kind: str,
    payload: dict[str, Any] | bytes,
    *,
    message_id: uuid.UUID | str | None = None,
    seq: int = 0,
    ticket_id: uuid.UUID | str | None = None,
    timestamp_ms: int | None = None,
) -> peer_pb2.Envelope:
    """An envelope from `partner.workspace` to the partner's workspace, signed now."""
    from apps.peer.identity import workspace_private_key

    env = peer_pb2.Envelope(
        message_id=str(message_id or uuid.uuid4()),
        timestamp_ms=timestamp_ms if timestamp_ms is not None else now_ms(),
        sender_workspace_id=str(partner.workspace_id),
        receiver_workspace_id=str(partner.remote_workspace_id),
        kind=kind,
        payload=payload if isinstance(payload, bytes) else encode_payload(payload),
        seq=seq,
        ticket_id=str(ticket_id or ""),
    )
    env.signature = workspace_private_key(partner.workspace).sign(signing_bytes(env))
    return env
