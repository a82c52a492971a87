"""The gRPC PeerService: mutual TLS, the standard health service, graceful shutdown.

TLS trusts this installation's own CA (for invitation enrollment certificates)
and every partner CA pinned in the database. The trust list and our leaf are
re-read without a restart: a background thread reloads them, and gRPC asks for
the current configuration before each new TLS handshake. Which partner a call
comes from, and whether its certificate belongs to it, is decided per message
in `apps.peer.inbox`.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from django.db import close_old_connections
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from apps.peer import identity
from apps.peer.inbox import PeerRejected, receive
from apps.peer.tlsaudit import HandshakeAudit
from fedsite_proto.peer.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name
RELOAD_INTERVAL_S = 0.5
SHUTDOWN_GRACE_S = 10.0


def _client_cert(context: grpc.ServicerContext) -> bytes | None:
    certs = context.auth_context().get("x509_pem_cert") or []
    return certs[0] if certs else None


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    """Thin: authenticate and apply through `apps.peer.inbox` / `apps.peer.handshake`."""

    def __init__(self, trust: TrustStore | None = None) -> None:
        self.trust = trust

    def _run(self, fn: Any, request: Any, context: grpc.ServicerContext) -> Any:
        close_old_connections()
        try:
            return fn(request, _client_cert(context))
        except PeerRejected as exc:
            if exc.trailers:
                context.set_trailing_metadata(exc.trailers)
            context.abort(exc.code, exc.message)
        except Exception:
            log.exception("peer call failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the message was not applied")
        finally:
            close_old_connections()

    def Deliver(self, request: peer_pb2.Envelope, context: grpc.ServicerContext) -> peer_pb2.Ack:
        return self._run(receive, request, context)

    def Handshake(
        self, request: peer_pb2.HandshakeRequest, context: grpc.ServicerContext
    ) -> peer_pb2.HandshakeResponse:
        from apps.peer.handshake import answer_handshake

        answer = self._run(answer_handshake, request, context)
        if self.trust is not None:
            self.trust.reload()  # the new partner's next connection must be trusted at once
        return answer


class TrustStore:
    """Our leaf and the CAs we accept client certificates from, reloaded from disk and database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digest = ""
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.initial = self._build(force=True)
        assert self.initial is not None

    def _build(self, *, force: bool = False) -> grpc.ServerCertificateConfiguration | None:
        from apps.partners.models import Partner

        key, cert = identity.read_key_and_cert()
        cas = {identity.ensure_identity().ca_pem.strip()}
        try:
            cas |= {pem.strip() for pem in Partner.objects.exclude(ca_pem="").values_list("ca_pem", flat=True)}
        finally:
            close_old_connections()
        roots = "\n".join(sorted(cas)).encode() + b"\n"
        digest = hashlib.sha256(key + cert + roots).hexdigest()
        with self._lock:
            if digest == self._digest and not force:
                return None
            self._digest = digest
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=roots)

    def reload(self) -> None:
        try:
            config = self._build()
        except Exception:  # noqa: BLE001 - keep serving with the last good configuration
            log.exception("could not reload the peer TLS configuration")
            return
        if config is not None:
            with self._lock:
                self._pending = config
            log.info("peer TLS configuration reloaded")

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback before each TLS handshake: a new configuration, or None for no change."""
        with self._lock:
            config, self._pending = self._pending, None
        return config

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(RELOAD_INTERVAL_S):
            self.reload()


class PortInUse(RuntimeError):
    """The peer service's address cannot be bound (another process listens there)."""


def create_server(address: str, *, max_workers: int = 16) -> tuple[grpc.Server, int, TrustStore, health.HealthServicer]:
    """A PeerService server bound to `address` (not started). Returns (server, port, trust, health)."""
    identity.ensure_identity(renew=True)
    trust = TrustStore()
    # No SO_REUSEPORT: gRPC sets it by default, and a second peer service on a taken port
    # would then bind "successfully" and share the first one's connections.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="peer"),
        options=[("grpc.so_reuseport", 0)],
    )
    peer_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(trust), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = grpc.dynamic_ssl_server_credentials(trust.initial, trust.fetch, require_client_authentication=True)
    try:
        port = server.add_secure_port(address, creds)
    except RuntimeError:
        port = 0
    wanted = address.rpartition(":")[2]
    if port == 0 or (wanted.isdigit() and int(wanted) not in (0, port)):
        raise PortInUse(f"cannot listen on {address}: the port is in use (another peer service?) or not local")
    return server, port, trust, health_servicer


def _announce() -> None:
    from apps.peer.reachability import announce_started

    try:
        n = announce_started()
    except Exception:  # noqa: BLE001 - the service runs on; partners' probes find it anyway
        log.exception("could not announce the peer service to partners")
        return
    log.info("announced to %d partner(s)", n)


def serve(address: str, *, ready: Any = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (in-flight calls get SHUTDOWN_GRACE_S)."""
    server, port, trust, health_servicer = create_server(address)
    tls_audit = HandshakeAudit().start()  # certificates refused inside the TLS handshake get audited too
    stop = threading.Event()
    reloader = threading.Thread(target=trust.run, args=(stop,), name="peer-trust-reload", daemon=True)
    server.start()
    reloader.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("peer service listening on %s (port %s)", address, port)
    if ready is not None:
        ready(port)
    # "I'm back": partners retry what they hold for us at once, not when their backoff ends.
    threading.Thread(target=_announce, name="peer-announce", daemon=True).start()

    def _shutdown(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping the peer service (grace %.0f s)", signum, SHUTDOWN_GRACE_S)
        health_servicer.enter_graceful_shutdown()
        stop.set()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    stop.wait()
    server.stop(SHUTDOWN_GRACE_S).wait()
    log.info("peer service stopped")
    tls_audit.stop()
