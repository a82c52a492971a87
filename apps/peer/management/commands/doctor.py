"""manage.py doctor: this installation's identity and own peer service, and every partner's connectivity,
certificate, clock and undelivered messages."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.delivery import heartbeat
from apps.peer.identity import RENEW_BEFORE, ensure_identity
from apps.peer.models import OutboxMessage, OutboxStatus


class Command(BaseCommand):
    help = (
        "Check the installation certificate and its own peer service, and, for every partner, connectivity, "
        "certificates, clock skew and messages waiting to be delivered."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", help="only this workspace's partners (slug)")

    def _line(self, ok: bool | None, what: str, detail: str) -> None:
        mark = {True: self.style.SUCCESS("ok  "), False: self.style.ERROR("FAIL"), None: self.style.WARNING("warn")}[ok]
        self.stdout.write(f"    {mark}  {what:<13} {detail}")
        if ok is False:
            self.problems += 1

    def _expiry(self, what: str, expires: dt.datetime | None) -> None:
        if expires is None:
            self._line(None, what, "unknown")
            return
        left = expires - dt.datetime.now(dt.UTC)
        detail = f"valid until {expires:%Y-%m-%d %H:%M} UTC ({left.days} days left)"
        self._line(False if left.total_seconds() <= 0 else None if left < RENEW_BEFORE else True, what, detail)

    def _own_peer_service(self, ident) -> None:
        """Dial this installation's peer service where partners dial it, and ask its health service.

        If that address does not answer from here (a name only partners resolve, a NAT) but the
        listen address does, the service runs: a warning, not a failure.
        """
        endpoint = settings.FEDSITE_PEER_ENDPOINT
        status, error = self._health(ident, endpoint)
        if status == "SERVING":
            self._line(True, "peer service", f"serving at {endpoint}")
            return
        host, _, port = settings.FEDSITE_PEER_LISTEN.rpartition(":")
        local = f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"  # noqa: S104 - not a bind
        if local != endpoint and self._health(ident, local)[0] == "SERVING":
            self._line(None, "peer service", f"serving at {local}, but {endpoint} does not answer from here ({error})")
            return
        self._line(False, "peer service", f"not answering at {endpoint} ({error}); is `manage.py run_peer` running?")

    def _health(self, ident, address: str) -> tuple[str, str]:
        """(serving status, error) of the peer service's health service at `address`, over mutual TLS."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from apps.peer.client import secure_channel
        from apps.peer.server import SERVICE_NAME

        key_pem, cert_pem = identity.read_key_and_cert()
        channel = secure_channel(address, ident.ca_pem, key_pem, cert_pem)
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=3, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            return "", f"{exc.code().name}: {(exc.details() or '')[:120]}"
        finally:
            channel.close()
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return status, "" if status == "SERVING" else status

    def _tls_refusals(self) -> None:
        """Certificates the peer service refused in the TLS handshake lately (no workspace: who called is unknown)."""
        since = timezone.now() - dt.timedelta(hours=24)
        events = AuditEvent.objects.filter(verb="peer.rejected", workspace=None, created_at__gte=since)
        counts: dict[str, int] = {}
        for data in events.values_list("data", flat=True):
            reason = (data or {}).get("reason", "?")
            counts[reason] = counts.get(reason, 0) + 1 + int((data or {}).get("repeated", 0))
        self.stdout.write("\n  refused TLS handshakes, last 24 h")
        if not counts:
            self._line(True, "handshakes", "none")
            return
        detail = ", ".join(f"{reason} ×{n}" for reason, n in sorted(counts.items()))
        self._line(None, "handshakes", f"{detail} (see the audit log, verb peer.rejected)")

    def handle(self, *args, **opts):
        self.problems = 0
        ident = ensure_identity()
        self.stdout.write(f"Fedsite doctor: installation {settings.FEDSITE_INSTALLATION_NAME}")
        self.stdout.write(f"  peer endpoint {settings.FEDSITE_PEER_ENDPOINT} (listen {settings.FEDSITE_PEER_LISTEN})")
        self.stdout.write(f"  CA fingerprint {ident.ca_fingerprint}")
        self._expiry("our cert", ident.cert_not_after)
        self._own_peer_service(ident)
        partners = Partner.objects.select_related("workspace").order_by("workspace__slug", "name")
        if opts["workspace"]:
            partners = partners.filter(workspace__slug=opts["workspace"])
        if not partners:
            self.stdout.write("  no partners")
        allowed = settings.FEDSITE_CLOCK_SKEW_S
        for partner in partners:
            remote = f"{partner.remote_installation}/{partner.remote_workspace_slug}"
            label = partner.name if partner.name == remote else f"{partner.name} ({remote})"
            self.stdout.write(f"\n  {partner.workspace.slug} → {label} at {partner.endpoint or '?'}: {partner.status}")
            pending = OutboxMessage.objects.filter(partner=partner, status=OutboxStatus.PENDING)
            if partner.status != PartnerStatus.CONNECTED:
                self._line(None, "status", f"{partner.status}; not contacted ({pending.count()} messages waiting)")
                continue
            result = heartbeat(partner)
            if not result["ok"]:
                self._line(False, "connectivity", result["error"])
                self._expiry("their cert", partner.cert_expires_at)
            else:
                self._line(True, "connectivity", f"round trip {result['rtt_ms']:.1f} ms")
                self._expiry("their cert", result["cert_expires_at"])
                skew = result["clock_skew_s"]
                ok = True if abs(skew) < allowed / 2 else None if abs(skew) < allowed else False
                self._line(ok, "clock skew", f"{skew:+.3f} s (allowed ±{allowed} s)")
            oldest = pending.order_by("seq").first()
            if oldest is None:
                self._line(True, "outbox", "nothing waiting")
            else:
                self._line(
                    None if oldest.attempts < 5 else False,
                    "outbox",
                    f"{pending.count()} waiting; oldest {oldest.kind} tried {oldest.attempts}× "
                    f"({oldest.last_error[:120] or 'not yet tried'})",
                )
        self._tls_refusals()
        if self.problems:
            raise CommandError(f"{self.problems} problem(s) found")
        self.stdout.write(self.style.SUCCESS("\nall checks passed"))
