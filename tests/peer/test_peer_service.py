"""The peer service at the gRPC level: a real mutual-TLS server in this process, crafted callers.

Acme is a workspace of this installation. "Umbrella" and "Initech" are two
workspaces of one remote installation (one CA); "Stranger" is an installation
acme never met. Every rejection answers a clear status, writes an audit event
and changes nothing else.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc

from apps.audit.models import AuditEvent
from apps.datasets.models import RemoteDataset
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.client import secure_channel
from apps.peer.delivery import backoff_s, deliver_pending
from apps.peer.envelope import encode_payload, handshake_signing_bytes, now_ms, signing_bytes
from apps.peer.handshake import create_invitation
from apps.peer.inbox import PeerRejected, check_certificate
from apps.peer.models import InboxMessage, Invitation, OutboxMessage, OutboxStatus
from apps.peer.outbox import enqueue
from apps.peer.server import create_server
from apps.peer.tlsaudit import HandshakeAudit, classify
from apps.workspaces.models import Workspace
from fedsite_proto.peer.v1 import peer_pb2, peer_pb2_grpc

pytestmark = [pytest.mark.peer, pytest.mark.django_db(transaction=True)]
Code = grpc.StatusCode


@dataclass
class Installation:
    """A crafted remote installation: a CA and a leaf, as its peer server would present."""

    ca_key: Any
    ca_cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def make(cls, name: str, *, expired: bool = False) -> Installation:
        ca_key, ca_cert = identity.make_ca(name)
        now = dt.datetime.now(dt.UTC)
        window = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (None, None)
        cert, key = identity.issue_leaf(ca_key, ca_cert, common_name=name, not_before=window[0], not_after=window[1])
        return cls(ca_key, ca_cert, cert, key)

    def leaf(self, **kw: Any) -> tuple[bytes, bytes]:
        return identity.issue_leaf(self.ca_key, self.ca_cert, common_name="leaf", **kw)


@dataclass
class RemoteWorkspace:
    """A workspace at a remote installation, pinned as a partner of acme."""

    inst: Installation
    workspace_id: uuid.UUID
    key: ed25519.Ed25519PrivateKey
    partner: Partner

    def envelope(self, kind: str, payload: dict[str, Any], **kw: Any) -> peer_pb2.Envelope:
        env = peer_pb2.Envelope(
            message_id=str(kw.get("message_id") or uuid.uuid4()),
            timestamp_ms=kw.get("timestamp_ms") or now_ms(),
            sender_workspace_id=str(kw.get("sender") or self.workspace_id),
            receiver_workspace_id=str(kw.get("receiver") or self.partner.workspace_id),
            kind=kind,
            payload=encode_payload(payload),
            seq=1,
            ticket_id=str(kw.get("ticket_id") or ""),
        )
        env.signature = kw.get("sign_with", self.key).sign(signing_bytes(env))
        return env


def _remote(workspace: Workspace, inst: Installation, name: str) -> RemoteWorkspace:
    key = ed25519.Ed25519PrivateKey.generate()
    ws_id = uuid.uuid4()
    partner = Partner.objects.create(
        workspace=workspace,
        name=name,
        remote_installation=name,
        remote_workspace_id=ws_id,
        remote_workspace_slug=name.lower(),
        ca_pem=inst.ca_pem,
        ca_fingerprint=identity.fingerprint(inst.ca_pem),
        workspace_public_key=identity.b64(
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ),
        status=PartnerStatus.CONNECTED,
    )
    return RemoteWorkspace(inst, ws_id, key, partner)


@pytest.fixture
def peer_env(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.FEDSITE_CLOCK_SKEW_S = 300
    acme = Workspace.objects.create(slug="acme", name="Acme Ads")
    remote_inst = Installation.make("remote")
    umbrella = _remote(acme, remote_inst, "Umbrella")
    initech = _remote(acme, remote_inst, "Initech")
    other = _remote(acme, Installation.make("other"), "Other")
    server, port, trust, health_servicer = create_server("127.0.0.1:0", max_workers=4)
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield {
        "acme": acme,
        "umbrella": umbrella,
        "initech": initech,
        "other": other,
        "port": port,
        "trust": trust,
    }
    server.stop(0).wait()


def _stub(env: dict, cert_pem: bytes, key_pem: bytes) -> peer_pb2_grpc.PeerServiceStub:
    channel = secure_channel(f"127.0.0.1:{env['port']}", identity.ensure_identity().ca_pem, key_pem, cert_pem)
    return peer_pb2_grpc.PeerServiceStub(channel)


def send(env: dict, remote: RemoteWorkspace, envelope: peer_pb2.Envelope, *, cert: tuple[bytes, bytes] | None = None):
    cert_pem, key_pem = cert or (remote.inst.cert_pem, remote.inst.key_pem)
    return _stub(env, cert_pem, key_pem).Deliver(envelope, timeout=5)


def rejected(env: dict, remote: RemoteWorkspace, envelope: peer_pb2.Envelope, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        send(env, remote, envelope, **kw)
    return info.value


def audit_reasons() -> list[str]:
    return [e.data.get("reason") for e in AuditEvent.objects.filter(verb="peer.rejected")]


SHARE = {"id": str(uuid.uuid4()), "name": "features", "schema": [{"name": "age", "type": "int"}], "row_count": 9}


def test_it_applies_a_signed_message_and_acknowledges_a_resend_without_reapplying(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    first = umbrella.envelope("dataset.shared", SHARE)
    assert send(peer_env, umbrella, first).result == peer_pb2.Ack.APPLIED
    assert RemoteDataset.objects.get(partner=umbrella.partner).name == "features"
    # the sender lost the ack and re-sends: same id, signed again later
    again = umbrella.envelope("dataset.shared", {**SHARE, "name": "changed"}, message_id=first.message_id,
                              timestamp_ms=first.timestamp_ms + 1000)  # fmt: skip
    assert send(peer_env, umbrella, again).result == peer_pb2.Ack.DUPLICATE
    assert RemoteDataset.objects.get(partner=umbrella.partner).name == "features"
    assert InboxMessage.objects.count() == 1


def test_it_rejects_a_replayed_message_id(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    envelope = umbrella.envelope("dataset.shared", SHARE)
    send(peer_env, umbrella, envelope)
    RemoteDataset.objects.all().delete()
    err = rejected(peer_env, umbrella, envelope)
    assert err.code() == Code.ALREADY_EXISTS and "replayed" in err.details()
    assert not RemoteDataset.objects.exists()
    assert audit_reasons() == ["replayed_message"]


def test_it_rejects_a_bad_signature(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    envelope = umbrella.envelope("dataset.shared", SHARE)
    envelope.payload = encode_payload({**SHARE, "name": "tampered"})
    err = rejected(peer_env, umbrella, envelope)
    assert err.code() == Code.UNAUTHENTICATED and "bad signature" in err.details()
    assert not RemoteDataset.objects.exists() and not InboxMessage.objects.exists()
    assert audit_reasons() == ["bad_signature"]


def test_it_rejects_a_timestamp_outside_the_allowed_clock_skew(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    envelope = umbrella.envelope("dataset.shared", SHARE, timestamp_ms=now_ms() - 301_000)
    err = rejected(peer_env, umbrella, envelope)
    assert err.code() == Code.UNAUTHENTICATED and "clock" in err.details()
    assert not RemoteDataset.objects.exists()
    assert audit_reasons() == ["clock_skew"]


def test_it_rejects_a_workspace_speaking_for_another(peer_env) -> None:
    umbrella, initech = peer_env["umbrella"], peer_env["initech"]
    # Initech (same installation, so its TLS certificate is fine) claims to be Umbrella
    envelope = umbrella.envelope("dataset.shared", SHARE, sign_with=initech.key)
    err = rejected(peer_env, initech, envelope)
    assert err.code() == Code.PERMISSION_DENIED and "claims to come from" in err.details()
    assert not RemoteDataset.objects.exists()
    assert audit_reasons() == ["speaking_for_another"]


def test_it_rejects_a_certificate_from_another_partners_ca(peer_env) -> None:
    umbrella, other = peer_env["umbrella"], peer_env["other"]
    envelope = umbrella.envelope("dataset.shared", SHARE)  # validly signed by Umbrella's key
    err = rejected(peer_env, umbrella, envelope, cert=(other.inst.cert_pem, other.inst.key_pem))
    assert err.code() == Code.UNAUTHENTICATED and "not issued by the CA pinned" in err.details()
    assert audit_reasons() == ["unknown_ca"]


def tls_refusals(reason: str, timeout: float = 10.0) -> list[AuditEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            e for e in AuditEvent.objects.filter(verb="peer.rejected", workspace=None) if e.data["reason"] == reason
        ]
        if found:
            return found
        time.sleep(0.05)
    return []


# serve() runs HandshakeAudit for the peer service's lifetime. Here it runs inside each test's body:
# pytest moves file descriptor 2 between its own capture files around every test phase.


def test_it_refuses_an_unknown_ca_in_the_tls_handshake(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    stranger = Installation.make("stranger")
    with HandshakeAudit(window_s=0):
        err = rejected(peer_env, umbrella, umbrella.envelope("dataset.shared", SHARE),
                       cert=(stranger.cert_pem, stranger.key_pem))  # fmt: skip
    assert err.code() == Code.UNAVAILABLE
    assert not RemoteDataset.objects.exists() and not InboxMessage.objects.exists()
    # gRPC ends the handshake before any Python runs; its logged reason still becomes an audit event.
    events = tls_refusals("tls_unknown_ca")  # one per attempt: the channel retries within its deadline
    assert events and "unable to get local issuer certificate" in events[0].data["detail"]
    assert events[0].source == "peer" and events[0].actor_label == "unknown peer"


def test_it_refuses_an_expired_certificate(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    now = dt.datetime.now(dt.UTC)
    expired = umbrella.inst.leaf(not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    with HandshakeAudit(window_s=0):
        err = rejected(peer_env, umbrella, umbrella.envelope("dataset.shared", SHARE), cert=expired)
    assert err.code() == Code.UNAVAILABLE  # the TLS handshake itself fails
    assert not RemoteDataset.objects.exists()
    events = tls_refusals("tls_certificate_expired")
    assert events and "certificate has expired" in events[0].data["detail"]
    # and the per-message check says so by name, should a certificate ever get past TLS
    with pytest.raises(PeerRejected) as info:
        check_certificate(expired[0], umbrella.partner)
    assert info.value.reason == "expired_certificate" and info.value.code == Code.UNAUTHENTICATED


def test_it_rejects_a_sender_that_is_not_a_partner(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    err = rejected(peer_env, umbrella, umbrella.envelope("dataset.shared", SHARE, sender=uuid.uuid4()))
    assert err.code() == Code.PERMISSION_DENIED and "not a partner" in err.details()
    assert audit_reasons() == ["unknown_partner"]


def test_it_rejects_a_suspended_partner(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    Partner.objects.filter(pk=umbrella.partner.pk).update(status=PartnerStatus.SUSPENDED)
    err = rejected(peer_env, umbrella, umbrella.envelope("dataset.shared", SHARE))
    assert err.code() == Code.PERMISSION_DENIED and "suspended" in err.details()
    assert not RemoteDataset.objects.exists()


def test_a_message_the_services_refuse_changes_nothing(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    envelope = umbrella.envelope("ticket.approved", {"ticket_id": str(uuid.uuid4())})
    err = rejected(peer_env, umbrella, envelope)
    assert err.code() == Code.FAILED_PRECONDITION and "unknown ticket" in err.details()
    assert not InboxMessage.objects.exists()
    assert audit_reasons() == ["refused_by_service"]


def test_answers_carry_the_receivers_copy_of_the_ticket_even_a_refusal(peer_env) -> None:
    from apps.tickets.models import Ticket

    # given: umbrella proposed a ticket that acme has already rejected
    umbrella = peer_env["umbrella"]
    ticket = Ticket.objects.create(
        workspace=peer_env["acme"], partner=umbrella.partner, name="t", kind="psi", role="follower",
        is_proposer=False, status="rejected",
    )  # fmt: skip
    tid = str(ticket.id)
    # when: its withdrawal arrives (it crossed our rejection): applied as a no-op, our state in the ack
    ack = send(peer_env, umbrella, umbrella.envelope("ticket.withdrawn", {"ticket_id": tid}, ticket_id=tid))
    assert ack.result == peer_pb2.Ack.APPLIED
    assert (ack.state.ticket_id, ack.state.status, ack.state.known) == (tid, "rejected", True)
    ticket.refresh_from_db()
    assert ticket.status == "rejected"
    # when: it claims a decision only we may take: refused, and the refusal still carries our state
    err = rejected(peer_env, umbrella, umbrella.envelope("ticket.approved", {"ticket_id": tid}, ticket_id=tid))
    assert err.code() == Code.FAILED_PRECONDITION
    trailers = dict(err.trailing_metadata())
    state = peer_pb2.TicketState.FromString(trailers["fedsite-ticket-state-bin"])
    assert (state.ticket_id, state.status, state.is_proposer) == (tid, "rejected", False)


def test_heartbeat_answers_with_time_and_certificate_expiry(peer_env) -> None:
    umbrella = peer_env["umbrella"]
    ack = send(peer_env, umbrella, umbrella.envelope("heartbeat", {}))
    assert ack.result == peer_pb2.Ack.HEARTBEAT
    assert abs(ack.server_time_ms - now_ms()) < 5000
    assert dt.datetime.fromisoformat(ack.cert_not_after) > dt.datetime.now(dt.UTC)
    umbrella.partner.refresh_from_db()
    assert umbrella.partner.last_contact_at and umbrella.partner.cert_expires_at


def test_the_health_service_reports_serving(peer_env) -> None:
    ident = identity.ensure_identity()
    channel = secure_channel(f"127.0.0.1:{peer_env['port']}", ident.ca_pem, ident.key_pem, ident.cert_pem)
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --- handshake at the gRPC level ------------------------------------------------------------


def _handshake(peer_env, *, invitation: Invitation, secret: str, enrollment: tuple[str, str], **kw: Any):
    key = ed25519.Ed25519PrivateKey.generate()
    beta = Installation.make("beta")
    req = peer_pb2.HandshakeRequest(
        invitation_id=str(invitation.id),
        secret=secret,
        installation="beta",
        endpoint="127.0.0.1:1",
        ca_pem=beta.ca_pem,
        workspace_id=str(uuid.uuid4()),
        workspace_slug="globex",
        workspace_public_key=identity.b64(
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ),
        timestamp_ms=now_ms(),
    )
    req.signature = key.sign(handshake_signing_bytes(req))
    cert, key_pem = enrollment
    return _stub(peer_env, cert.encode(), key_pem.encode()).Handshake(req, timeout=5)


def _invite(acme: Workspace) -> tuple[Invitation, dict[str, Any]]:
    from apps.peer.handshake import decode_code

    invitation, code = create_invitation(acme)
    return invitation, decode_code(code)


def test_handshake_pins_the_invitee_and_the_invitation_works_once(peer_env) -> None:
    invitation, body = _invite(peer_env["acme"])
    enrollment = (body["enrollment_cert"], body["enrollment_key"])
    answer = _handshake(peer_env, invitation=invitation, secret=body["secret"], enrollment=enrollment)
    partner = Partner.objects.get(pk=answer.partner_id)
    assert partner.status == PartnerStatus.CONNECTED and partner.remote_workspace_slug == "globex"
    with pytest.raises(grpc.RpcError) as info:
        _handshake(peer_env, invitation=invitation, secret=body["secret"], enrollment=enrollment)
    assert info.value.code() == Code.FAILED_PRECONDITION and "already used" in info.value.details()
    assert audit_reasons() == ["invitation_reused"]


def test_handshake_rejects_an_expired_invitation(peer_env) -> None:
    invitation, body = _invite(peer_env["acme"])
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    partners = Partner.objects.count()
    with pytest.raises(grpc.RpcError) as info:
        _handshake(peer_env, invitation=invitation, secret=body["secret"],
                   enrollment=(body["enrollment_cert"], body["enrollment_key"]))  # fmt: skip
    assert info.value.code() == Code.FAILED_PRECONDITION and "expired" in info.value.details()
    assert Partner.objects.count() == partners
    assert audit_reasons() == ["invitation_expired"]


def test_handshake_rejects_a_wrong_secret_and_another_invitations_certificate(peer_env) -> None:
    first, body1 = _invite(peer_env["acme"])
    second, body2 = _invite(peer_env["acme"])
    with pytest.raises(grpc.RpcError) as info:
        _handshake(peer_env, invitation=first, secret="guess",
                   enrollment=(body1["enrollment_cert"], body1["enrollment_key"]))  # fmt: skip
    assert info.value.code() == Code.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        _handshake(peer_env, invitation=first, secret=body1["secret"],
                   enrollment=(body2["enrollment_cert"], body2["enrollment_key"]))  # fmt: skip
    assert info.value.code() == Code.UNAUTHENTICATED
    assert sorted(audit_reasons()) == ["wrong_enrollment_certificate", "wrong_secret"]
    assert not Invitation.objects.filter(used_at__isnull=False).exists()


# --- delivery ----------------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    assert 0.9 <= backoff_s(1) <= 1.1
    assert 3.6 <= backoff_s(3) <= 4.4
    assert backoff_s(40) <= 300 * 1.1


@pytest.fixture
def loopback(peer_env):
    """Acme and Globex, two workspaces of this installation, partnered through the real server."""
    from django.db import transaction

    acme = peer_env["acme"]
    globex = Workspace.objects.create(slug="globex", name="Globex")
    ident = identity.ensure_identity()
    endpoint = f"127.0.0.1:{peer_env['port']}"
    common = {"ca_pem": ident.ca_pem, "ca_fingerprint": ident.ca_fingerprint, "endpoint": endpoint,
              "status": PartnerStatus.CONNECTED}  # fmt: skip
    to_globex = Partner.objects.create(workspace=acme, name="globex", remote_workspace_id=globex.id,
                                       workspace_public_key=identity.workspace_public_key(globex), **common)  # fmt: skip
    Partner.objects.create(workspace=globex, name="acme", remote_workspace_id=acme.id,
                           workspace_public_key=identity.workspace_public_key(acme), **common)  # fmt: skip
    peer_env["trust"].reload()

    def share(name: str, **extra: Any) -> OutboxMessage:
        with transaction.atomic():
            return enqueue(to_globex, "dataset.shared", {"id": str(uuid.uuid4()), "name": name, **extra})

    return to_globex, share


def test_delivery_sends_in_order_skips_a_refused_message_and_applies_each_once(loopback) -> None:
    to_globex, share = loopback
    first, bad, last = share("one"), share(""), share("three")  # the middle one has no name: refused
    assert deliver_pending(to_globex.pk) == 2
    statuses = dict(OutboxMessage.objects.values_list("id", "status"))
    assert statuses == {first.id: OutboxStatus.DELIVERED, bad.id: OutboxStatus.REFUSED, last.id: OutboxStatus.DELIVERED}
    assert sorted(RemoteDataset.objects.values_list("name", flat=True)) == ["one", "three"]
    assert list(InboxMessage.objects.order_by("seq").values_list("seq", flat=True)) == [first.seq, last.seq]
    assert deliver_pending(to_globex.pk) == 0


def test_delivery_backs_off_while_the_partner_is_unreachable_and_stops_at_the_first_failure(loopback) -> None:
    to_globex, share = loopback
    Partner.objects.filter(pk=to_globex.pk).update(endpoint="127.0.0.1:1")
    first, second = share("one"), share("two")
    assert deliver_pending(to_globex.pk) == 0
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.attempts == 1 and first.next_attempt_at > dt.datetime.now(dt.UTC)
    assert "UNAVAILABLE" in first.last_error
    assert second.attempts == 0  # an unreachable partner is probed once per drain, not once per message
    assert second.next_attempt_at == first.next_attempt_at
    # the partner comes back; once the backoff has elapsed both go, in order
    Partner.objects.filter(pk=to_globex.pk).update(endpoint=f"127.0.0.1:{loopback[0].endpoint.rsplit(':', 1)[1]}")
    OutboxMessage.objects.update(next_attempt_at=dt.datetime.now(dt.UTC))
    assert deliver_pending(to_globex.pk) == 2
    assert list(InboxMessage.objects.order_by("seq").values_list("payload__name", flat=True)) == ["one", "two"]


def test_runtime_tls_files_hold_our_leaf_and_the_partners_pinned_ca(loopback) -> None:
    to_globex, _ = loopback
    files = identity.runtime_tls_files(to_globex)
    cert = x509.load_pem_x509_certificate(open(files["cert_file"], "rb").read())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fedsite-runtime" in names.get_values_for_type(x509.DNSName)
    assert open(files["peer_ca_file"]).read() == to_globex.ca_pem
    serialization.load_pem_private_key(open(files["key_file"], "rb").read(), password=None)


def test_an_invitations_enrollment_certificate_cannot_deliver_messages(loopback, peer_env) -> None:
    # Acme and Globex share this installation's CA, so only the enrollment check stands in the way.
    from apps.peer.handshake import decode_code

    to_globex, _ = loopback
    _invitation, code = create_invitation(peer_env["acme"])
    body = decode_code(code)
    from apps.peer.envelope import build

    envelope = build(to_globex, "dataset.shared", SHARE)
    with pytest.raises(grpc.RpcError) as info:
        _stub(peer_env, body["enrollment_cert"].encode(), body["enrollment_key"].encode()).Deliver(envelope, timeout=5)
    assert info.value.code() == Code.UNAUTHENTICATED
    assert not RemoteDataset.objects.exists()


def test_a_suspended_partners_messages_wait_until_it_is_resumed(loopback) -> None:
    to_globex, share = loopback
    Partner.objects.filter(pk=to_globex.pk).update(status=PartnerStatus.SUSPENDED)
    message = share("held")
    assert deliver_pending(to_globex.pk) == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING and message.attempts == 0
    Partner.objects.filter(pk=to_globex.pk).update(status=PartnerStatus.CONNECTED)
    assert deliver_pending(to_globex.pk) == 1
    assert Partner.objects.get(pk=to_globex.pk).delivery_lease_until is None


def test_a_worker_finding_the_lease_taken_leaves_the_messages_to_its_holder(loopback) -> None:
    to_globex, share = loopback
    share("one")
    Partner.objects.filter(pk=to_globex.pk).update(
        delivery_lease_until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    )
    assert deliver_pending(to_globex.pk) == 0
    Partner.objects.filter(pk=to_globex.pk).update(
        delivery_lease_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    assert deliver_pending(to_globex.pk) == 1  # an expired lease is taken over


def test_a_payload_of_the_wrong_shape_is_refused_for_good_not_retried(peer_env) -> None:
    from apps.tickets.models import Ticket

    umbrella = peer_env["umbrella"]
    payload = {"ticket_id": str(uuid.uuid4()), "kind": "psi", "proposer_role": "leader",
               "receiver_dataset_id": str(uuid.uuid4()), "proposer_dataset": {"id": "not-a-uuid"}}  # fmt: skip
    err = rejected(peer_env, umbrella, umbrella.envelope("ticket.proposed", payload))
    assert err.code() == Code.INVALID_ARGUMENT and "malformed" in err.details()
    assert not Ticket.objects.exists() and not InboxMessage.objects.exists()
    assert audit_reasons() == ["malformed_payload"]


def test_a_stuck_message_holds_up_only_its_own_ticket(loopback, monkeypatch) -> None:
    from django.db import transaction

    from apps.peer import dispatch

    def boom(*_args: Any) -> None:
        raise RuntimeError("a bug on the receiving side")

    monkeypatch.setitem(dispatch.HANDLERS, "test.boom", boom)
    to_globex, share = loopback
    ticket_a, ticket_b = uuid.uuid4(), uuid.uuid4()

    def send(kind: str, name: str, ticket: uuid.UUID | None) -> OutboxMessage:
        with transaction.atomic():
            return enqueue(to_globex, kind, {"id": str(uuid.uuid4()), "name": name}, ticket_id=ticket)

    stuck = send("test.boom", "a1", ticket_a)
    behind = send("dataset.shared", "a2", ticket_a)
    send("dataset.shared", "b1", ticket_b)
    share("no ticket")
    # the receiver answers INTERNAL for a1: a2 waits behind it, the others go
    assert deliver_pending(to_globex.pk) == 2
    assert sorted(RemoteDataset.objects.values_list("name", flat=True)) == ["b1", "no ticket"]
    stuck.refresh_from_db()
    behind.refresh_from_db()
    assert stuck.attempts == 1 and "INTERNAL" in stuck.last_error and behind.attempts == 0
    # once the receiver no longer fails on it (here: refuses it for good), the ticket's lane moves on, in order
    monkeypatch.delitem(dispatch.HANDLERS, "test.boom")
    OutboxMessage.objects.update(next_attempt_at=dt.datetime.now(dt.UTC))
    assert deliver_pending(to_globex.pk) == 1
    stuck.refresh_from_db()
    assert stuck.status == OutboxStatus.REFUSED
    assert RemoteDataset.objects.filter(name="a2").exists()


def test_handshake_refusals_are_classified_and_repeats_counted_not_flooded() -> None:
    line = (
        "I1125 07:06:43.600675   24633 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
        "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: {}"
    )
    assert classify(line.format("certificate has expired"))[0] == "tls_certificate_expired"
    assert classify(line.format("unable to get local issuer certificate"))[0] == "tls_unknown_ca"
    assert classify(line.format("something new"))[0] == "tls_handshake_failed"
    assert classify("I1125 chttp2_server.cc:123] Handshake done") is None
    with HandshakeAudit(window_s=60):
        for _ in range(5):  # a scanner hammering the port
            os.write(2, (line.format("unable to get local issuer certificate") + "\n").encode())
        os.write(2, b"an ordinary log line\n")
        assert len(tls_refusals("tls_unknown_ca")) == 1
    # The 4 repeats are one more event, written when the next one is (or when the tap stops).
    events = AuditEvent.objects.filter(verb="peer.rejected").order_by("created_at")
    assert [(e.data["reason"], 1 + e.data.get("repeated", 0)) for e in events] == [
        ("tls_unknown_ca", 1),
        ("tls_unknown_ca", 4),
    ]


@pytest.mark.parametrize("rows", [2**63, 10**30, -1])
def test_an_out_of_range_integer_is_invalid_argument_not_internal(peer_env, rows) -> None:
    """A number the database cannot hold is refused before it gets there, for good (no retry)."""
    umbrella = peer_env["umbrella"]
    err = rejected(peer_env, umbrella, umbrella.envelope("dataset.shared", {**SHARE, "row_count": rows}))
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert "row_count is out of range" in err.details()
    assert not RemoteDataset.objects.exists() and not InboxMessage.objects.exists()
    assert audit_reasons() == ["malformed_payload"]
