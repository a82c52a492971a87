"""Partnership invitations: listed with their status, revoked by admins, and a revoked code refused.

Erin (acme's admin) invites; Bob (viewer) and Dave (member) may only read the
list; Charlie (globex) must see nothing of acme's invitations. The handshake is
called directly (`answer_handshake`), as the peer server would, with the
enrollment certificate and secret the code carries.
"""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.partners.models import Partner
from apps.peer import identity
from apps.peer.envelope import handshake_signing_bytes, now_ms
from apps.peer.handshake import answer_handshake, create_invitation, decode_code, revoke_invitation
from apps.peer.inbox import PeerRejected
from apps.peer.models import Invitation, InvitationStatus
from fedsite_proto.peer.v1 import peer_pb2

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/{slug}/partners/invitations/"


@pytest.fixture(autouse=True)
def peer_identity(settings, tmp_path):
    """This installation's CA and keys live under a fresh var dir."""
    settings.VAR_DIR = tmp_path
    settings.FEDSITE_CLOCK_SKEW_S = 300


def invite(workspace, who=None) -> tuple[Invitation, dict]:
    invitation, code = create_invitation(workspace, acting_user=who)
    return invitation, decode_code(code)


def revoke_url(invitation, slug: str = "acme") -> str:
    return BASE.format(slug=slug) + f"{invitation.pk}/revoke/"


def handshake_request(invitation: Invitation, body: dict) -> peer_pb2.HandshakeRequest:
    """What Beta's installation sends when its admin pastes the code."""
    key = ed25519.Ed25519PrivateKey.generate()
    beta_ca_key, beta_ca = identity.make_ca("beta")
    req = peer_pb2.HandshakeRequest(
        invitation_id=str(invitation.id),
        secret=body["secret"],
        installation="beta",
        endpoint="127.0.0.1:1",
        ca_pem=beta_ca.public_bytes(serialization.Encoding.PEM).decode(),
        workspace_id=str(uuid.uuid4()),
        workspace_slug="globex",
        workspace_public_key=identity.b64(
            key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ),
        timestamp_ms=now_ms(),
    )
    req.signature = key.sign(handshake_signing_bytes(req))
    return req


def make_used(invitation: Invitation, partner: Partner | None = None) -> None:
    Invitation.objects.filter(pk=invitation.pk).update(used_at=timezone.now(), partner=partner)


def make_expired(invitation: Invitation) -> None:
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))


def snapshot(invitation: Invitation) -> tuple:
    row = Invitation.objects.get(pk=invitation.pk)
    return row.used_at, row.expires_at, row.revoked_at, row.revoked_by_id, AuditEvent.objects.count()


# --- status -------------------------------------------------------------------------------------


def test_status_is_pending_then_used_expired_or_revoked(workspaces, users):
    acme = workspaces["acme"]
    pending, _ = invite(acme)
    used, _ = invite(acme)
    expired, _ = invite(acme)
    revoked, _ = invite(acme)
    make_used(used)
    make_expired(expired)
    revoke_invitation(revoked, acting_user=users["erin"])
    statuses = {i.pk: i.status for i in Invitation.objects.all()}
    assert statuses == {
        pending.pk: InvitationStatus.PENDING,
        used.pk: InvitationStatus.USED,
        expired.pk: InvitationStatus.EXPIRED,
        revoked.pk: InvitationStatus.REVOKED,
    }
    # The queryset filter agrees with the property, status by status.
    for status in InvitationStatus.values:
        assert [i.pk for i in Invitation.objects.with_status(status)] == [
            pk for pk, s in statuses.items() if s == status
        ], status


# --- listing ------------------------------------------------------------------------------------


def test_the_list_shows_each_invitation_with_its_status_newest_first(api, workspaces, users):
    acme = workspaces["acme"]
    first, _ = invite(acme, users["erin"])
    second, _ = invite(acme, users["alice"])
    third, _ = invite(acme, users["erin"])
    Invitation.objects.filter(pk=first.pk).update(created_at=timezone.now() - dt.timedelta(hours=2))
    Invitation.objects.filter(pk=second.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    partner = Partner.objects.create(workspace=acme, name="Beta Bank", remote_workspace_id=uuid.uuid4())
    make_used(first, partner)
    revoke_invitation(second, acting_user=users["erin"])
    invite(workspaces["globex"], users["charlie"])  # another workspace's: never listed in acme

    r = api("erin").get(BASE.format(slug="acme"))

    assert r.status_code == 200, r.content
    body = r.json()
    assert body["count"] == 3
    rows = body["results"]
    assert [row["id"] for row in rows] == [str(third.pk), str(second.pk), str(first.pk)]
    assert [row["status"] for row in rows] == ["pending", "revoked", "used"]
    assert rows[0]["created_by"] == "erin" and rows[0]["revoked_at"] is None and rows[0]["partner_id"] is None
    assert rows[1]["revoked_by"] == "erin" and rows[1]["revoked_at"] is not None
    assert rows[2]["partner_id"] == str(partner.pk) and rows[2]["partner_name"] == "Beta Bank"
    assert rows[2]["used_at"] is not None
    assert all("code" not in row and "secret_hash" not in row for row in rows)


def test_the_list_filters_by_status_and_pages(api, workspaces):
    acme = workspaces["acme"]
    pending, _ = invite(acme)
    expired, _ = invite(acme)
    make_expired(expired)
    client = api("bob")
    only = client.get(BASE.format(slug="acme"), {"status": "expired"}).json()["results"]
    assert [row["id"] for row in only] == [str(expired.pk)]
    page = client.get(BASE.format(slug="acme"), {"page_size": 1}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    bad = client.get(BASE.format(slug="acme"), {"status": "lost"})
    assert bad.status_code == 400 and "pending" in bad.json()["status"][0]


@pytest.mark.parametrize("who", ["bob", "dave", "carol", "erin", "alice"])
def test_every_role_that_reads_partners_reads_the_list(api, workspaces, who):
    invite(workspaces["acme"])
    r = api(who).get(BASE.format(slug="acme"))
    assert r.status_code == 200 and r.json()["count"] == 1


def test_another_workspace_and_anonymous_see_no_list(api, workspaces):
    invite(workspaces["acme"])
    assert api("charlie").get(BASE.format(slug="acme")).status_code == 404
    assert api("charlie").get(BASE.format(slug="globex")).json()["count"] == 0
    assert api(None).get(BASE.format(slug="acme")).status_code == 401


# --- revoking -----------------------------------------------------------------------------------


def test_an_admin_revokes_a_pending_invitation_and_it_is_audited(api, workspaces, users):
    invitation, _ = invite(workspaces["acme"], users["alice"])

    r = api("erin").post(revoke_url(invitation), {}, format="json")

    assert r.status_code == 200, r.content
    assert r.json()["status"] == "revoked" and r.json()["revoked_by"] == "erin"
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None and invitation.revoked_by == users["erin"]
    assert invitation.status == InvitationStatus.REVOKED
    event = AuditEvent.objects.get(verb="partner.invitation_revoked")
    assert event.workspace == workspaces["acme"] and event.actor == users["erin"]
    assert event.object_id == str(invitation.pk) and event.source == "api"


@pytest.mark.parametrize(
    ("make", "state"),
    [
        (make_used, "used"),
        (make_expired, "expired"),
        (lambda inv: revoke_invitation(inv), "revoked"),
    ],
    ids=["used", "expired", "revoked"],
)
def test_only_a_pending_invitation_can_be_revoked(api, workspaces, make, state):
    invitation, _ = invite(workspaces["acme"])
    make(invitation)
    before = snapshot(invitation)

    r = api("alice").post(revoke_url(invitation), {}, format="json")

    assert r.status_code == 400
    assert r.json()["detail"] == f"invitation is already {state}; only a pending invitation can be revoked"
    assert snapshot(invitation) == before


@pytest.mark.parametrize("who", ["carol", "dave", "bob"])
def test_a_role_below_admin_cannot_revoke(api, workspaces, who):
    invitation, _ = invite(workspaces["acme"])
    before = snapshot(invitation)
    r = api(who).post(revoke_url(invitation), {}, format="json")
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]
    assert snapshot(invitation) == before


@pytest.mark.parametrize("who", ["carol", "dave", "bob"])
def test_a_role_below_admin_cannot_create_an_invitation_either(api, workspaces, who):
    assert api(who).post(BASE.format(slug="acme"), {}, format="json").status_code == 403
    assert not Invitation.objects.exists()


def test_another_workspaces_invitation_is_not_found(api, workspaces):
    theirs, _ = invite(workspaces["globex"])
    ours, _ = invite(workspaces["acme"])
    before = snapshot(theirs)
    # Acme's admin naming globex's invitation, and Charlie naming acme's from either workspace.
    assert api("erin").post(revoke_url(theirs), {}, format="json").status_code == 404
    assert api("charlie").post(revoke_url(ours, slug="globex"), {}, format="json").status_code == 404
    assert api("charlie").post(revoke_url(ours, slug="acme"), {}, format="json").status_code == 404
    assert api("erin").post(revoke_url(Invitation(pk=uuid.uuid4())), {}, format="json").status_code == 404
    assert api("erin").post(BASE.format(slug="acme") + "not-a-uuid/revoke/", {}, format="json").status_code == 404
    assert snapshot(theirs) == before
    assert Invitation.objects.get(pk=ours.pk).status == InvitationStatus.PENDING


def test_the_service_refuses_a_used_invitation_even_when_handed_a_stale_copy(workspaces):
    # given a copy loaded before the partner accepted
    invitation, _ = invite(workspaces["acme"])
    stale = Invitation.objects.get(pk=invitation.pk)
    make_used(invitation)
    # when / then: the service re-reads the locked row, not the copy
    with pytest.raises(ServiceError, match="invitation is already used"):
        revoke_invitation(stale)
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is None


# --- the handshake --------------------------------------------------------------------------------


def test_the_handshake_accepts_a_pending_invitation(workspaces):
    invitation, body = invite(workspaces["acme"])
    answer = answer_handshake(handshake_request(invitation, body), body["enrollment_cert"].encode())
    assert Partner.objects.filter(pk=answer.partner_id, workspace=workspaces["acme"]).exists()
    assert Invitation.objects.get(pk=invitation.pk).status == InvitationStatus.USED


def test_the_handshake_refuses_a_revoked_invitation(workspaces, users):
    invitation, body = invite(workspaces["acme"])
    revoke_invitation(invitation, acting_user=users["erin"])
    partners = Partner.objects.count()

    with pytest.raises(PeerRejected) as info:
        answer_handshake(handshake_request(invitation, body), body["enrollment_cert"].encode())

    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == "invitation_revoked"
    assert "invitation revoked" in info.value.message
    assert Partner.objects.count() == partners
    assert Invitation.objects.get(pk=invitation.pk).used_at is None
    rejected = AuditEvent.objects.get(verb="peer.rejected")
    assert rejected.workspace == workspaces["acme"] and rejected.data["reason"] == "invitation_revoked"
    assert rejected.data["invitation_id"] == str(invitation.pk)
