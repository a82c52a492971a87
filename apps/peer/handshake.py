"""The partnership handshake: Alpha invites, Beta accepts, both pin each other.

1. Alpha's admin creates an invitation (`create_invitation`). The one-time code
   carries Alpha's endpoint, CA certificate and its fingerprint, the workspace
   id, slug and public key, a secret, the expiry, and a short-lived *enrollment*
   client certificate issued by Alpha's CA for this invitation only (it lets
   Beta open the mutual-TLS connection before Alpha knows Beta's CA).
2. Beta's admin pastes the code (`accept_invitation`). Beta checks the CA
   against the fingerprint, connects to Alpha trusting only that CA, and sends
   its own CA, endpoint and workspace key, signed with that key.
3. Alpha (`answer_handshake`, in its peer server) checks the enrollment
   certificate, the secret (hash compared in constant time), expiry and single
   use, pins Beta and answers with its workspace details; Beta pins Alpha.

Until it is used, Alpha's admin can revoke an invitation (`revoke_invitation`):
the handshake then refuses it like an expired one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

import grpc
from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.client import secure_channel
from apps.peer.envelope import handshake_signing_bytes, now_ms
from apps.peer.inbox import PeerRejected
from apps.peer.models import Invitation, InvitationStatus
from apps.workspaces.models import Workspace
from fedsite_proto.peer.v1 import peer_pb2, peer_pb2_grpc

CODE_PREFIX = "fedsite-invite-v1."
Code = grpc.StatusCode


class PartnerUnreachable(ServiceError):
    """The partner's peer service did not answer."""

    status_code = 502
    code = "partner_unreachable"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _default_name(workspace_name: str, installation: str, slug: str) -> str:
    """What a new partner is called unless the admin names it: the partner workspace's own name."""
    return (workspace_name or "").strip()[:110] or f"{installation or 'partner'}/{slug}"


def _unique_name(workspace: Workspace, wanted: str) -> str:
    name, n = wanted[:110] or "partner", 2
    while Partner.objects.filter(workspace=workspace, name=name).exists():
        name, n = f"{wanted[:105]} ({n})", n + 1
    return name


@transaction.atomic
def create_invitation(workspace: Workspace, *, acting_user: Any = None, source: str = "api") -> tuple[Invitation, str]:
    """A one-time invitation; returns it and the code to hand to the partner's admin."""
    ident = identity.ensure_identity()
    secret = secrets.token_urlsafe(32)
    expires = timezone.now() + dt.timedelta(minutes=settings.FEDSITE_INVITATION_TTL_MINUTES)
    invitation = Invitation.objects.create(
        workspace=workspace,
        secret_hash=_hash(secret),
        expires_at=expires,
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
    )
    enroll_cert, enroll_key = identity.issue_enrollment_certificate(expires, str(invitation.id))
    body = {
        "v": 1,
        "invitation_id": str(invitation.id),
        "installation": settings.FEDSITE_INSTALLATION_NAME,
        "endpoint": settings.FEDSITE_PEER_ENDPOINT,
        "ca_pem": ident.ca_pem,
        "ca_fingerprint": ident.ca_fingerprint,
        "workspace_id": str(workspace.id),
        "workspace_slug": workspace.slug,
        "workspace_name": workspace.name,
        "workspace_public_key": identity.workspace_public_key(workspace),
        "secret": secret,
        "expires_at": expires.isoformat(),
        "enrollment_cert": enroll_cert,
        "enrollment_key": enroll_key,
    }
    code = CODE_PREFIX + base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
    record(
        workspace,
        "partner.invited",
        invitation,
        actor=acting_user,
        source=source,
        data={"expires_at": expires.isoformat()},
    )
    return invitation, code


@transaction.atomic
def revoke_invitation(invitation: Invitation, *, acting_user: Any = None, source: str = "api") -> Invitation:
    """Withdraw a pending invitation so its code can no longer be accepted.

    The row lock is the one the handshake takes, so a revocation and an acceptance
    of the same invitation cannot both succeed.
    """
    locked = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
    if locked is None:
        raise ServiceError("invitation no longer exists")
    invitation, status = locked, locked.status
    if status != InvitationStatus.PENDING:
        raise ServiceError(f"invitation is already {status}; only a pending invitation can be revoked")
    invitation.revoked_at = timezone.now()
    invitation.revoked_by = acting_user if getattr(acting_user, "is_authenticated", False) else None
    invitation.save(update_fields=["revoked_at", "revoked_by"])
    record(
        invitation.workspace,
        "partner.invitation_revoked",
        invitation,
        actor=acting_user,
        source=source,
        data={"expires_at": invitation.expires_at.isoformat()},
    )
    return invitation


def decode_code(code: str) -> dict[str, Any]:
    raw = (code or "").strip()
    if not raw.startswith(CODE_PREFIX):
        raise ServiceError("not a Fedsite invitation code", field="code")
    try:
        data = raw[len(CODE_PREFIX) :]
        body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError("unknown version")
        for key in ("invitation_id", "endpoint", "ca_pem", "ca_fingerprint", "workspace_id", "workspace_public_key",
                    "secret", "expires_at", "enrollment_cert", "enrollment_key"):  # fmt: skip
            if not isinstance(body.get(key), str) or not body[key]:
                raise ValueError(f"{key} is missing")
        uuid.UUID(body["workspace_id"])
    except (ValueError, TypeError) as exc:
        raise ServiceError(f"the invitation code is damaged ({exc})", field="code") from None
    return body


def accept_invitation(
    workspace: Workspace, code: str, *, name: str = "", acting_user: Any = None, source: str = "api"
) -> Partner:
    """Beta's side: call Alpha, and pin Alpha once Alpha has pinned us.

    A refusal (ours or the inviter's) raises ServiceError and is audited here too.
    """
    try:
        return _accept(workspace, code, name=name, acting_user=acting_user, source=source)
    except ServiceError as exc:
        record(
            workspace,
            "partner.accept_failed",
            None,
            actor=acting_user,
            source=source,
            data={"error": exc.message[:500]},
        )
        raise


def _accept(workspace: Workspace, code: str, *, name: str, acting_user: Any, source: str) -> Partner:
    body = decode_code(code)
    try:
        actual = identity.fingerprint(body["ca_pem"])
    except ValueError:
        raise ServiceError("the invitation's CA certificate is not a certificate", field="code") from None
    if not hmac.compare_digest(actual, body["ca_fingerprint"]):
        raise ServiceError("the CA certificate does not match the fingerprint in the invitation", field="code")
    expires = parse_datetime(body["expires_at"])
    if expires is None or expires <= timezone.now():
        raise ServiceError("the invitation has expired; ask for a new one", field="code")
    remote_ws = uuid.UUID(body["workspace_id"])
    if remote_ws == workspace.id:
        raise ServiceError("a workspace cannot partner with itself", field="code")
    if hmac.compare_digest(body["ca_fingerprint"], identity.ensure_identity().ca_fingerprint):
        # Its proposals and jobs would need two installations (two peer services, a runtime on each side).
        raise ServiceError(
            f"this invitation comes from workspace {body.get('workspace_slug') or '?'} of this same installation: "
            "two workspaces of one installation cannot be partners; partner with a workspace on another "
            "installation (or share the data within one workspace)",
            field="code",
        )
    if Partner.objects.filter(workspace=workspace, remote_workspace_id=remote_ws).exists():
        raise ServiceError(f"{body.get('workspace_slug')} is already a partner", field="code")
    name = (name or "").strip()
    if name and Partner.objects.filter(workspace=workspace, name=name).exists():
        raise ServiceError("a partner with this name exists", field="name")
    name = name or _default_name(
        body.get("workspace_name", ""), body.get("installation", ""), body.get("workspace_slug", "")
    )
    ident = identity.ensure_identity()
    req = peer_pb2.HandshakeRequest(
        invitation_id=body["invitation_id"],
        secret=body["secret"],
        installation=settings.FEDSITE_INSTALLATION_NAME,
        endpoint=settings.FEDSITE_PEER_ENDPOINT,
        ca_pem=ident.ca_pem,
        workspace_id=str(workspace.id),
        workspace_slug=workspace.slug,
        workspace_name=workspace.name,
        workspace_public_key=identity.workspace_public_key(workspace),
        timestamp_ms=now_ms(),
    )
    req.signature = identity.workspace_private_key(workspace).sign(handshake_signing_bytes(req))
    # The call happens outside any transaction: it waits on the network.
    channel = secure_channel(
        body["endpoint"], body["ca_pem"], body["enrollment_key"].encode(), body["enrollment_cert"].encode()
    )
    try:
        answer = peer_pb2_grpc.PeerServiceStub(channel).Handshake(req, timeout=15)
    except grpc.RpcError as exc:
        if exc.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
            raise PartnerUnreachable(
                f"could not reach {body['endpoint']}: {exc.details() or exc.code().name}", field="code"
            ) from None
        raise ServiceError(f"the partner refused: {exc.details() or exc.code().name}", field="code") from None
    finally:
        channel.close()
    with transaction.atomic():
        partner = Partner.objects.create(
            workspace=workspace,
            # The inviter has pinned us by now: never fail here over a name taken meanwhile.
            name=_unique_name(workspace, name),
            remote_installation=answer.installation or body.get("installation", ""),
            remote_workspace_id=remote_ws,
            remote_workspace_slug=answer.workspace_slug or body.get("workspace_slug", ""),
            endpoint=body["endpoint"],
            ca_pem=body["ca_pem"],
            ca_fingerprint=body["ca_fingerprint"],
            workspace_public_key=body["workspace_public_key"],
            status=PartnerStatus.CONNECTED,
            last_contact_at=timezone.now(),
            created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
        )
        record(
            workspace,
            "partner.connected",
            partner,
            actor=acting_user,
            source=source,
            data={"ca_fingerprint": partner.ca_fingerprint, "endpoint": partner.endpoint, "side": "invitee"},
        )
    return partner


def answer_handshake(req: peer_pb2.HandshakeRequest, cert_pem: bytes | None) -> peer_pb2.HandshakeResponse:
    """Alpha's side, in the peer server. Raises PeerRejected (audited) on any failure."""
    try:
        with transaction.atomic():
            invitation = _check_invitation(req, cert_pem)
            workspace = invitation.workspace
            partner = Partner.objects.create(
                workspace=workspace,
                name=_unique_name(workspace, _default_name(req.workspace_name, req.installation, req.workspace_slug)),
                remote_installation=req.installation[:120],
                remote_workspace_id=uuid.UUID(req.workspace_id),
                remote_workspace_slug=req.workspace_slug[:50],
                endpoint=req.endpoint[:255],
                ca_pem=req.ca_pem,
                ca_fingerprint=identity.fingerprint(req.ca_pem),
                workspace_public_key=req.workspace_public_key,
                status=PartnerStatus.CONNECTED,
                last_contact_at=timezone.now(),
                created_by=invitation.created_by,
            )
            Invitation.objects.filter(pk=invitation.pk).update(used_at=timezone.now(), partner=partner)
            record(
                workspace,
                "partner.connected",
                partner,
                actor_label=f"{req.installation}/{req.workspace_slug}",
                source="peer",
                data={"ca_fingerprint": partner.ca_fingerprint, "endpoint": partner.endpoint, "side": "inviter"},
            )
    except PeerRejected as exc:
        from apps.peer.inbox import _audit_rejection

        _audit_rejection(
            _invitation_workspace(req.invitation_id),
            None,
            exc,
            {"invitation_id": req.invitation_id, "installation": req.installation, "workspace": req.workspace_slug},
        )
        raise
    return peer_pb2.HandshakeResponse(
        installation=settings.FEDSITE_INSTALLATION_NAME,
        workspace_id=str(workspace.id),
        workspace_slug=workspace.slug,
        workspace_name=workspace.name,
        workspace_public_key=identity.workspace_public_key(workspace),
        partner_id=str(partner.id),
    )


def _invitation_workspace(invitation_id: str) -> Workspace | None:
    """The inviting workspace, for auditing a refused handshake in the right tenant."""
    try:
        return Workspace.objects.filter(invitations__id=uuid.UUID(invitation_id)).first()
    except ValueError:
        return None


def _check_invitation(req: peer_pb2.HandshakeRequest, cert_pem: bytes | None) -> Invitation:
    try:
        invitation_id = uuid.UUID(req.invitation_id)
        uuid.UUID(req.workspace_id)
        identity.fingerprint(req.ca_pem)
    except ValueError as exc:
        raise PeerRejected(Code.INVALID_ARGUMENT, f"malformed handshake: {exc}", reason="malformed") from None
    invitation = (
        Invitation.objects.select_for_update(of=("self",)).select_related("workspace").filter(pk=invitation_id).first()
    )
    if invitation is None:
        raise PeerRejected(Code.NOT_FOUND, "no such invitation", reason="unknown_invitation")
    cert = x509.load_pem_x509_certificate(cert_pem) if cert_pem else None
    ident = identity.ensure_identity()
    if (
        cert is None
        or not identity.certificate_issued_by(cert, ident.ca_pem)
        or cert.subject.rfc4514_string() != f"CN=invitation:{invitation.id}"
    ):
        raise PeerRejected(
            Code.UNAUTHENTICATED,
            "the client certificate is not this invitation's",
            reason="wrong_enrollment_certificate",
        )
    if invitation.used_at is not None:
        raise PeerRejected(Code.FAILED_PRECONDITION, "this invitation was already used", reason="invitation_reused")
    if invitation.revoked_at is not None:
        raise PeerRejected(
            Code.FAILED_PRECONDITION, "invitation revoked by the inviting admin", reason="invitation_revoked"
        )
    if invitation.expires_at <= timezone.now():
        raise PeerRejected(Code.FAILED_PRECONDITION, "this invitation has expired", reason="invitation_expired")
    if not hmac.compare_digest(invitation.secret_hash, _hash(req.secret)):
        raise PeerRejected(Code.PERMISSION_DENIED, "wrong invitation secret", reason="wrong_secret")
    if not identity.verify_signature(req.workspace_public_key, req.signature, handshake_signing_bytes(req)):
        raise PeerRejected(Code.UNAUTHENTICATED, "bad signature on the handshake", reason="bad_signature")
    if abs(now_ms() - req.timestamp_ms) / 1000 > settings.FEDSITE_CLOCK_SKEW_S:
        raise PeerRejected(
            Code.UNAUTHENTICATED, "handshake timestamp outside the allowed clock skew", reason="clock_skew"
        )
    if hmac.compare_digest(identity.fingerprint(req.ca_pem), ident.ca_fingerprint):
        raise PeerRejected(
            Code.FAILED_PRECONDITION,
            "two workspaces of one installation cannot be partners",
            reason="same_installation",
        )
    if Partner.objects.filter(workspace=invitation.workspace, remote_workspace_id=req.workspace_id).exists():
        raise PeerRejected(Code.ALREADY_EXISTS, "already partners", reason="already_partners")
    return invitation
