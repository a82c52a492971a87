"""Audit the client certificates gRPC refuses inside the TLS handshake.

An unknown CA or an expired certificate never reaches Python: gRPC's C core
ends the handshake before any servicer or interceptor runs, and grpc-python
offers no verification hook. What the core does do is log the reason, one line
per refused handshake, on the process's standard error:

    I1125 07:06:43.600675 24633 ssl_transport_security.cc:2563] Handshake failed
    with error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:
    CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate

`HandshakeAudit` puts a pipe in front of file descriptor 2 in the peer service
process, passes every byte through to the real standard error unchanged, and
turns each such line into a `peer.rejected` audit event with no workspace (the
refusal happens before we know who is calling), with a reason: `tls_unknown_ca`,
`tls_certificate_expired`, `tls_no_client_certificate` or
`tls_handshake_failed`. Repeats of one reason within `window_s` are counted into
the next event rather than written one by one, so a scanner cannot flood the
audit log. The peer service makes no outbound gRPC calls, so every such line in
its process is an inbound refusal. Tests pin the line format of the gRPC
version in requirements.txt.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from typing import Any

from django.db import close_old_connections

log = logging.getLogger(__name__)

_HANDSHAKE_FAILED = re.compile(r"Handshake failed with (?:fatal )?error (\w+): ?(.*)$")
REASONS = (
    ("certificate has expired", "tls_certificate_expired"),
    ("unable to get local issuer certificate", "tls_unknown_ca"),
    ("self signed certificate", "tls_unknown_ca"),
    ("self-signed certificate", "tls_unknown_ca"),
    ("certificate signature failure", "tls_unknown_ca"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "tls_no_client_certificate"),
)


def classify(line: str) -> tuple[str, str] | None:
    """(reason, detail) for a gRPC log line reporting a failed TLS handshake, else None."""
    match = _HANDSHAKE_FAILED.search(line)
    if match is None:
        return None
    detail = f"{match.group(1)}: {match.group(2)}".strip()
    for needle, reason in REASONS:
        if needle.lower() in detail.lower():
            return reason, detail[:500]
    return "tls_handshake_failed", detail[:500]


def record_refusal(reason: str, detail: str, repeated: int = 0) -> None:
    from apps.audit.services import record

    data: dict[str, Any] = {"reason": reason, "code": "UNAVAILABLE", "detail": detail, "stage": "tls"}
    if repeated:
        data["repeated"] = repeated
    try:
        record(None, "peer.rejected", actor_label="unknown peer", source="peer", data=data)
    except Exception:  # noqa: BLE001 - auditing must never take the peer service down
        log.exception("could not record a refused TLS handshake")
    finally:
        close_old_connections()


class HandshakeAudit:
    """Tap standard error (file descriptor 2) for refused handshakes; `stop()` puts it back.

    One thread only copies bytes through (so writers to stderr never wait on the
    database); another writes the audit events.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._saved: int | None = None
        self._threads: list[threading.Thread] = []
        self._found: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def start(self) -> HandshakeAudit:
        read_fd, write_fd = os.pipe()
        self._saved = os.dup(2)
        out = os.dup(self._saved)  # the pump's own copy: stop() closes _saved while it may still write
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._threads = [
            threading.Thread(target=self._pump, args=(read_fd, out), name="peer-tls-tap", daemon=True),
            threading.Thread(target=self._recorder, name="peer-tls-audit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __enter__(self) -> HandshakeAudit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._saved is None:
            return
        os.dup2(self._saved, 2)  # the pipe's only writer is gone: the pump reads EOF and ends
        os.close(self._saved)
        self._saved = None
        for thread in self._threads:
            thread.join(5)

    def _pump(self, read_fd: int, out: int) -> None:
        pending = b""
        try:
            with os.fdopen(read_fd, "rb", buffering=0) as pipe:
                while chunk := pipe.read(65536):
                    try:
                        os.write(out, chunk)
                    except OSError:
                        pass
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        found = classify(raw.decode("utf-8", "replace"))
                        if found is not None:
                            self._found.put(found)
        finally:
            os.close(out)
            self._found.put(None)

    def _recorder(self) -> None:
        while (found := self._found.get()) is not None:
            reason, detail = found
            now = time.monotonic()
            if now - self._last.get(reason, -1e9) < self.window_s:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                continue
            self._last[reason] = now
            record_refusal(reason, detail, self._suppressed.pop(reason, 0))
        for reason, count in self._suppressed.items():  # stopping: the repeats not yet written
            record_refusal(reason, "more refusals like the previous one", count - 1)
        self._suppressed.clear()
