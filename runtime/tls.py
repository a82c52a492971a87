"""Mutual-TLS gRPC servers and channels between the two runtimes.

Each side presents its installation's certificate and trusts only the partner's
CA (pinned at the partnership handshake), so a runtime talks to exactly one peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from runtime.config import JobConfig

# Large enough for a batch of 4096 activations x 512 floats, or a PSI batch.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # A partner that starts a moment later is reached 0.1 s after it listens, not after gRPC's
    # default first reconnect backoff of a whole second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# For servers: never share a port with another process (gRPC sets SO_REUSEPORT by default,
# so a second runtime on a taken port would bind "successfully" and split its connections).
NO_PORT_SHARING: tuple[str, Any] = ("grpc.so_reuseport", 0)


def add_port(server: grpc.Server, cfg: JobConfig, address: str | None = None) -> int:
    """Bind the server on the config's listen address with mTLS (or plaintext in tests)."""
    addr = address or cfg.listen_address
    assert addr, "listen_address is validated for the leader"
    if cfg.tls is None:
        return server.add_insecure_port(addr)
    cert, key, peer_ca = cfg.tls.read()
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=peer_ca, require_client_auth=True)
    return server.add_secure_port(addr, creds)


def open_channel(cfg: JobConfig, address: str | None = None, extra: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to the partner runtime, verifying its certificate against the pinned CA."""
    addr = address or cfg.peer_address
    assert addr, "peer_address is validated for the follower"
    options = [*CHANNEL_OPTIONS, *extra]
    if cfg.tls is None:
        return grpc.insecure_channel(addr, options=options)
    cert, key, peer_ca = cfg.tls.read()
    creds = grpc.ssl_channel_credentials(root_certificates=peer_ca, private_key=key, certificate_chain=cert)
    options.append(("grpc.ssl_target_name_override", cfg.peer_server_name))
    return grpc.secure_channel(addr, creds, options=options)
