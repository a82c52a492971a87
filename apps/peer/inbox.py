"""Receiving a partner's message: authenticate it, then apply it exactly once.

Checks, in order (the first failure answers with its gRPC status, writes a
`peer.rejected` audit event and changes nothing else):

1. well-formed envelope (ids, JSON object payload)          INVALID_ARGUMENT
2. the receiver workspace exists here                       NOT_FOUND
3. the sender is a partner of that workspace                PERMISSION_DENIED
4. the client certificate was issued by the CA pinned for
   that partner and is within its validity period          UNAUTHENTICATED
5. the timestamp is within FEDSITE_CLOCK_SKEW_S             UNAUTHENTICATED
6. the signature verifies with the partner's pinned key     UNAUTHENTICATED
   (signed by another workspace: "speaking for another")   PERMISSION_DENIED
7. the partnership is not suspended                         PERMISSION_DENIED
8. the message id was not seen with this or a later
   timestamp (a verbatim replay)                           ALREADY_EXISTS

A message id seen before but re-signed later is the sender retrying after a lost
acknowledgement: it is acknowledged as DUPLICATE and not applied again. Apply
and the inbox row are one transaction. A message the services refuse (bad
payload, illegal transition, unknown ticket) answers FAILED_PRECONDITION and the
sender stops retrying it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import record
from apps.core.bounds import BadNumber
from apps.core.errors import ServiceError
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.envelope import HEARTBEAT, now_ms, signing_bytes
from apps.peer.models import InboxMessage
from apps.workspaces.models import Workspace
from fedsite_proto.peer.v1 import peer_pb2

log = logging.getLogger(__name__)
Code = grpc.StatusCode


class PeerRejected(Exception):
    """A message or call refused before anything was applied."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, reason: str, trailers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        # Trailing metadata for the answer: a refused ticket message carries our copy's state.
        self.trailers = trailers


STATE_TRAILER = "fedsite-ticket-state-bin"


def ticket_state(workspace: Workspace, partner: Partner, ticket_id: str) -> peer_pb2.TicketState | None:
    """Our copy of the message's ticket, as the answer carries it (None if the message names none)."""
    if not ticket_id:
        return None
    from apps.tickets.models import Ticket
    from apps.tickets.services import ticket_state as state_of

    try:
        ticket = Ticket.objects.filter(pk=uuid.UUID(ticket_id), workspace=workspace, partner=partner).first()
    except ValueError:
        return None
    if ticket is None:
        return peer_pb2.TicketState(ticket_id=ticket_id, known=False)
    state = state_of(ticket)
    return peer_pb2.TicketState(
        ticket_id=ticket_id,
        status=state["status"],
        is_proposer=state["is_proposer"],
        known=True,
        decision_comment=state["decision_comment"],
        jobs=[
            peer_pb2.JobState(job_id=j["job_id"], attempt=j["attempt"], status=j["status"], error=j["error"])
            for j in state["jobs"]
        ],
    )


def _refused(
    code: grpc.StatusCode, message: str, reason: str, workspace: Workspace, partner: Partner, env: peer_pb2.Envelope
) -> PeerRejected:
    """A refusal that is never a dead end: it carries our copy of the ticket for the sender to reconcile to."""
    try:
        state = ticket_state(workspace, partner, env.ticket_id)
    except Exception:  # noqa: BLE001 - the refusal itself must still go out
        log.exception("could not read the state of ticket %s for a refusal", env.ticket_id)
        state = None
    trailers = ((STATE_TRAILER, state.SerializeToString()),) if state is not None else ()
    return PeerRejected(code, message, reason=reason, trailers=trailers)


def _audit_rejection(
    workspace: Workspace | None, partner: Partner | None, exc: PeerRejected, data: dict[str, Any]
) -> None:
    try:
        record(
            workspace,
            "peer.rejected",
            partner,
            actor_label=partner.name if partner else "unknown peer",
            source="peer",
            data={"reason": exc.reason, "code": exc.code.name, "detail": exc.message, **data},
        )
    except Exception:  # noqa: BLE001 - auditing must never turn a clean rejection into a crash
        log.exception("could not record a peer rejection")


def check_certificate(cert_pem: bytes | None, partner: Partner) -> x509.Certificate:
    if not cert_pem:
        raise PeerRejected(Code.UNAUTHENTICATED, "no client certificate presented", reason="no_certificate")
    cert = x509.load_pem_x509_certificate(cert_pem)
    enrollment = any(
        str(a.value).startswith("invitation:") for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    if enrollment or not partner.ca_pem or not identity.certificate_issued_by(cert, partner.ca_pem):
        raise PeerRejected(
            Code.UNAUTHENTICATED,
            f"client certificate was not issued by the CA pinned for partner {partner.name}",
            reason="unknown_ca",
        )
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PeerRejected(
            Code.UNAUTHENTICATED,
            f"client certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)",
            reason="expired_certificate",
        )
    return cert


def authenticate(env: peer_pb2.Envelope, cert_pem: bytes | None) -> tuple[Workspace, Partner, x509.Certificate]:
    """Checks 1-7 above. Raises PeerRejected (after auditing it)."""
    workspace: Workspace | None = None
    partner: Partner | None = None
    data = {"message_id": env.message_id, "kind": env.kind, "sender": env.sender_workspace_id}
    try:
        try:
            uuid.UUID(env.message_id)
            receiver_id = uuid.UUID(env.receiver_workspace_id)
            sender_id = uuid.UUID(env.sender_workspace_id)
            if env.ticket_id:
                uuid.UUID(env.ticket_id)
        except ValueError as exc:
            raise PeerRejected(Code.INVALID_ARGUMENT, f"malformed envelope: {exc}", reason="malformed") from None
        if not env.kind:
            raise PeerRejected(Code.INVALID_ARGUMENT, "malformed envelope: kind is empty", reason="malformed")
        workspace = Workspace.objects.filter(pk=receiver_id).first()
        if workspace is None:
            raise PeerRejected(Code.NOT_FOUND, "no such workspace here", reason="unknown_workspace")
        partner = Partner.objects.filter(workspace=workspace, remote_workspace_id=sender_id).first()
        if partner is None:
            raise PeerRejected(
                Code.PERMISSION_DENIED,
                f"workspace {sender_id} is not a partner of {workspace.slug}",
                reason="unknown_partner",
            )
        cert = check_certificate(cert_pem, partner)
        skew_s = abs(now_ms() - env.timestamp_ms) / 1000
        if skew_s > settings.FEDSITE_CLOCK_SKEW_S:
            raise PeerRejected(
                Code.UNAUTHENTICATED,
                f"timestamp is {skew_s:.0f} s away from our clock (allowed: {settings.FEDSITE_CLOCK_SKEW_S} s)",
                reason="clock_skew",
            )
        signed = signing_bytes(env)
        if not identity.verify_signature(partner.workspace_public_key, env.signature, signed):
            impostor = _signed_by_another(partner, cert, env.signature, signed)
            if impostor is not None:
                raise PeerRejected(
                    Code.PERMISSION_DENIED,
                    f"message signed by workspace {impostor.remote_workspace_slug or impostor.remote_workspace_id} "
                    f"but claims to come from {partner.remote_workspace_slug or sender_id}",
                    reason="speaking_for_another",
                )
            raise PeerRejected(
                Code.UNAUTHENTICATED,
                "bad signature: does not verify with the pinned workspace key",
                reason="bad_signature",
            )
        if partner.status == PartnerStatus.SUSPENDED:
            raise PeerRejected(Code.PERMISSION_DENIED, "this partnership is suspended", reason="suspended")
        return workspace, partner, cert
    except PeerRejected as exc:
        _audit_rejection(workspace, partner, exc, data)
        raise


def _signed_by_another(partner: Partner, cert: x509.Certificate, signature: bytes, signed: bytes) -> Partner | None:
    """Another workspace of the same partner installation whose key made this signature."""
    others = Partner.objects.exclude(pk=partner.pk).exclude(workspace_public_key="")
    for other in others.filter(ca_fingerprint=partner.ca_fingerprint) if partner.ca_fingerprint else others:
        if identity.verify_signature(other.workspace_public_key, signature, signed):
            return other
    return None


def receive(env: peer_pb2.Envelope, cert_pem: bytes | None) -> peer_pb2.Ack:
    """Authenticate and apply one envelope; the answer the servicer returns."""
    workspace, partner, cert = authenticate(env, cert_pem)
    return accept(env, workspace, partner, cert_expires_at=cert.not_valid_after_utc)


def accept(
    env: peer_pb2.Envelope, workspace: Workspace, partner: Partner, *, cert_expires_at: dt.datetime | None = None
) -> peer_pb2.Ack:
    """Apply an authenticated envelope exactly once (checks 8 and after); the answer to return."""
    now = timezone.now()
    skew = (env.timestamp_ms - now_ms()) / 1000  # their clock minus ours, as the sender's heartbeat measures it
    ack = peer_pb2.Ack(server_time_ms=now_ms(), cert_not_after=identity.leaf_not_after().isoformat())
    if env.kind == HEARTBEAT:
        Partner.objects.filter(pk=partner.pk).update(
            last_contact_at=now, clock_skew_s=round(skew, 3), **_cert_field(cert_expires_at)
        )
        ack.result = peer_pb2.Ack.HEARTBEAT
        # The partner is up (a peer service announces itself this way when it starts):
        # what we hold back for it after an outage goes now, not when the backoff ends.
        from apps.peer.reachability import retry_now

        retry_now(partner.pk)
        return ack
    seen = InboxMessage.objects.filter(pk=env.message_id).first()
    if seen is not None:
        return _seen_before(env, seen, workspace, partner, ack)
    try:
        payload = json.loads(env.payload.decode())
        if not isinstance(payload, dict):
            raise ValueError("payload is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        rejection = PeerRejected(Code.INVALID_ARGUMENT, f"payload: {exc}", reason="malformed_payload")
        _audit_rejection(workspace, partner, rejection, {"message_id": env.message_id, "kind": env.kind})
        raise rejection from None
    try:
        with transaction.atomic():
            InboxMessage.objects.create(
                message_id=env.message_id,
                workspace=workspace,
                partner=partner,
                kind=env.kind,
                ticket_id=env.ticket_id or None,
                seq=env.seq,
                payload=payload,
                sent_at_ms=env.timestamp_ms,
            )
            from apps.peer.dispatch import apply_message

            apply_message(workspace, partner, env.kind, payload)
    except IntegrityError:
        # The same message arrived twice at once: the other request applied it.
        seen = InboxMessage.objects.filter(pk=env.message_id).first()
        if seen is None:
            raise
        return _seen_before(env, seen, workspace, partner, ack)
    except (BadNumber, OverflowError, DataError) as exc:
        # A number out of its column's range: checked by the services (BadNumber); the database's own
        # refusal is the last line, so such a message is never an internal error.
        message = exc.message if isinstance(exc, BadNumber) else f"a value is out of range ({exc})"
        rejection = PeerRejected(Code.INVALID_ARGUMENT, f"{env.kind} refused: {message}", reason="malformed_payload")
        _audit_rejection(workspace, partner, rejection, {"message_id": env.message_id, "kind": env.kind})
        raise rejection from None
    except ServiceError as exc:
        rejection = _refused(
            Code.FAILED_PRECONDITION,
            f"{env.kind} refused: {exc.message}",
            "refused_by_service",
            workspace,
            partner,
            env,
        )
        _audit_rejection(workspace, partner, rejection, {"message_id": env.message_id, "kind": env.kind})
        raise rejection from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # A payload of the wrong shape that slipped past the service's checks: refuse it for good
        # (retrying would block every later message to us) rather than answer INTERNAL.
        log.warning("malformed %s %s from %s: %r", env.kind, env.message_id, partner.name, exc)
        rejection = _refused(
            Code.INVALID_ARGUMENT,
            f"{env.kind} refused: malformed payload ({exc})",
            "malformed_payload",
            workspace,
            partner,
            env,
        )
        _audit_rejection(workspace, partner, rejection, {"message_id": env.message_id, "kind": env.kind})
        raise rejection from None
    # At most once a second: a burst of messages must not queue on the partner row's lock.
    Partner.objects.filter(pk=partner.pk).filter(
        Q(last_contact_at__isnull=True) | Q(last_contact_at__lt=now - dt.timedelta(seconds=1))
    ).update(last_contact_at=now, **_cert_field(cert_expires_at))
    ack.result = peer_pb2.Ack.APPLIED
    _attach_state(ack, workspace, partner, env)
    return ack


def _attach_state(ack: peer_pb2.Ack, workspace: Workspace, partner: Partner, env: peer_pb2.Envelope) -> None:
    state = ticket_state(workspace, partner, env.ticket_id)
    if state is not None:
        ack.state.CopyFrom(state)


def _cert_field(cert_expires_at: dt.datetime | None) -> dict[str, Any]:
    return {"cert_expires_at": cert_expires_at} if cert_expires_at is not None else {}


def _seen_before(
    env: peer_pb2.Envelope, seen: InboxMessage, workspace: Workspace, partner: Partner, ack: peer_pb2.Ack
) -> peer_pb2.Ack:
    if seen.partner_id != partner.pk or env.timestamp_ms <= seen.sent_at_ms:
        rejection = PeerRejected(
            Code.ALREADY_EXISTS, f"replayed message id {env.message_id}", reason="replayed_message"
        )
        _audit_rejection(workspace, partner, rejection, {"message_id": env.message_id, "kind": env.kind})
        raise rejection
    ack.result = peer_pb2.Ack.DUPLICATE
    _attach_state(ack, workspace, partner, env)
    return ack
