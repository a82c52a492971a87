"""Calling a partner's peer service: pinned mutual-TLS channels, cached per process."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import grpc

from apps.peer import identity
from fedsite_proto.peer.v1 import peer_pb2, peer_pb2_grpc

CALL_TIMEOUT_S = 10.0
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.ssl_target_name_override", identity.PEER_SERVER_NAME),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # A partner that was down must be retried promptly when our backoff says so,
    # not when gRPC's own reconnect backoff (up to 120 s) allows.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.enable_retries", 0),
]

_lock = threading.Lock()
_channels: dict[tuple[str, str, str], grpc.Channel] = {}
_retired: list[tuple[float, grpc.Channel]] = []  # dropped by forget(), closed once no call can be on them
RETIRED_CLOSE_AFTER_S = 60.0


def secure_channel(endpoint: str, ca_pem: str | bytes, key_pem: bytes, cert_pem: bytes) -> grpc.Channel:
    """A channel that trusts only `ca_pem` and presents (cert, key)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem.encode() if isinstance(ca_pem, str) else ca_pem,
        private_key=key_pem,
        certificate_chain=cert_pem,
    )
    return grpc.secure_channel(endpoint, creds, options=CHANNEL_OPTIONS)


def stub_for(partner: Any) -> peer_pb2_grpc.PeerServiceStub:
    """A stub on a cached channel to `partner`, presenting our current leaf certificate.

    The cache key includes the pinned CA and our certificate, so a rotation or a
    re-pin opens a fresh channel.
    """
    key_pem, cert_pem = identity.read_key_and_cert()
    cache_key = (
        partner.endpoint,
        hashlib.sha256(partner.ca_pem.encode()).hexdigest(),
        hashlib.sha256(cert_pem).hexdigest(),
    )
    with _lock:
        channel = _channels.get(cache_key)
        if channel is None:
            for stale in [k for k in _channels if k[0] == partner.endpoint]:
                _channels.pop(stale).close()
            channel = secure_channel(partner.endpoint, partner.ca_pem, key_pem, cert_pem)
            _channels[cache_key] = channel
    return peer_pb2_grpc.PeerServiceStub(channel)


def deliver(partner: Any, envelope: peer_pb2.Envelope, *, timeout: float = CALL_TIMEOUT_S) -> peer_pb2.Ack:
    return stub_for(partner).Deliver(envelope, timeout=timeout)


def forget(partner: Any) -> None:
    """Drop the cached channel to a partner that was unreachable.

    Such a channel waits out gRPC's reconnect backoff and fails every call at once
    meanwhile; a fresh one dials now, so a partner that is back is reached at once.
    The old channel is closed a minute later, not now: another thread may have a call
    on it (closing would cancel that call), and calls last at most CALL_TIMEOUT_S.
    """
    now = time.monotonic()
    with _lock:
        for stale in [k for k in _channels if k[0] == partner.endpoint]:
            _retired.append((now, _channels.pop(stale)))
        while _retired and now - _retired[0][0] > RETIRED_CLOSE_AFTER_S:
            _retired.pop(0)[1].close()


def close_all() -> None:
    with _lock:
        for channel in [*_channels.values(), *(c for _, c in _retired)]:
            channel.close()
        _channels.clear()
        _retired.clear()
