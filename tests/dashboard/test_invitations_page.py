"""The Partners page lists pending invitations; admins revoke them there, other roles only read."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.peer.handshake import create_invitation, revoke_invitation
from apps.peer.models import Invitation, InvitationStatus

pytestmark = pytest.mark.django_db

PAGE = "/w/acme/partners/"
REVOKE = "/w/acme/partners/invitations/revoke"


@pytest.fixture(autouse=True)
def peer_identity(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def invitations(workspaces, users):
    """Acme: one pending invitation by Erin, and one used, one expired, one revoked; globex: one pending."""
    acme = workspaces["acme"]
    pending, _ = create_invitation(acme, acting_user=users["erin"])
    used, _ = create_invitation(acme, acting_user=users["alice"])
    expired, _ = create_invitation(acme, acting_user=users["alice"])
    revoked, _ = create_invitation(acme, acting_user=users["alice"])
    Invitation.objects.filter(pk=used.pk).update(used_at=timezone.now())
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    revoke_invitation(revoked, acting_user=users["alice"])
    theirs, _ = create_invitation(workspaces["globex"], acting_user=users["charlie"])
    return {"pending": pending, "used": used, "expired": expired, "revoked": revoked, "theirs": theirs}


def revoke_form(invitation) -> dict[str, str]:
    return {"invitation": str(invitation.pk)}


def state() -> tuple:
    return (
        sorted(Invitation.objects.values_list("id", "used_at", "expires_at", "revoked_at")),
        AuditEvent.objects.count(),
    )


def test_the_page_lists_only_pending_invitations_with_who_created_them(invitations, browser_client):
    body = browser_client("erin").get(PAGE).content.decode()
    assert "Pending invitations" in body
    assert str(invitations["pending"].pk) in body  # the revoke form names it
    for other in ("used", "expired", "revoked", "theirs"):
        assert str(invitations[other].pk) not in body, other
    section = body.split('data-testid="pending-invitations"', 1)[1].split("</table>", 1)[0]
    assert section.count("<tr>") == 2  # header + the one pending invitation
    assert "erin" in section
    assert invitations["pending"].expires_at.strftime("%Y-%m-%d %H:%M") in section


def test_without_pending_invitations_there_is_no_section(workspaces, browser_client):
    body = browser_client("erin").get(PAGE).content.decode()
    assert "Pending invitations" not in body


def test_an_admin_revokes_a_pending_invitation(invitations, browser_client, users):
    client = browser_client("erin")

    r = client.post(REVOKE, revoke_form(invitations["pending"]))

    assert r.status_code == 302 and r["Location"] == PAGE
    invitation = Invitation.objects.get(pk=invitations["pending"].pk)
    assert invitation.status == InvitationStatus.REVOKED and invitation.revoked_by == users["erin"]
    event = AuditEvent.objects.filter(verb="partner.invitation_revoked", object_id=str(invitation.pk)).get()
    assert event.source == "ui" and event.actor == users["erin"]
    page = client.get(r["Location"]).content.decode()
    assert "Invitation revoked. Its code can no longer be accepted." in page
    assert "Pending invitations" not in page


@pytest.mark.parametrize("which", ["used", "expired", "revoked"])
def test_revoking_an_invitation_that_is_not_pending_is_a_message(invitations, browser_client, which):
    before = state()
    r = browser_client("alice").post(REVOKE, revoke_form(invitations[which]), follow=True)
    assert r.status_code == 200
    assert f"invitation is already {which}" in r.content.decode()
    assert state() == before


@pytest.mark.parametrize("target", ["theirs", "unknown", "garbage", "missing"])
def test_an_invitation_of_no_such_id_in_this_workspace_is_a_message(invitations, browser_client, target):
    form = {
        "theirs": revoke_form(invitations["theirs"]),
        "unknown": revoke_form(Invitation(pk=uuid.uuid4())),
        "garbage": {"action": "revoke", "invitation": "not-a-uuid"},
        "missing": {"action": "revoke"},
    }[target]
    before = state()
    r = browser_client("erin").post(REVOKE, form, follow=True)
    assert r.status_code == 200
    assert "No such invitation in this workspace." in r.content.decode()
    assert state() == before
    assert Invitation.objects.filter(revoked_at__isnull=False).count() == 1  # only the fixture's


@pytest.mark.parametrize("who", ["carol", "dave", "bob"])
def test_roles_below_admin_see_the_invitations_but_no_revoke_button(invitations, browser_client, who):
    body = browser_client(who).get(PAGE).content.decode()
    assert "Pending invitations" in body
    assert ">Revoke</button>" not in body and 'value="revoke"' not in body


@pytest.mark.parametrize("who", ["carol", "dave", "bob"])
def test_a_revoke_from_a_role_below_admin_is_refused_and_changes_nothing(invitations, browser_client, who):
    before = state()
    r = browser_client(who).post(REVOKE, revoke_form(invitations["pending"]))
    assert r.status_code == 403
    assert b"You can't do that here" in r.content
    assert state() == before


def test_charlie_cannot_revoke_in_acme(invitations, browser_client):
    before = state()
    assert browser_client("charlie").post(REVOKE, revoke_form(invitations["pending"])).status_code == 404
    assert state() == before


def test_the_revoke_form_carries_a_csrf_token(invitations, users):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["erin"])
    page = client.get(PAGE).content.decode()
    form = page.split('data-testid="pending-invitations"', 1)[1].split("</form>", 1)[0]
    assert 'name="csrfmiddlewaretoken"' in form
    # Without the token the POST is refused; with the page's token it goes through.
    assert client.post(REVOKE, revoke_form(invitations["pending"])).status_code == 403
    token = form.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    r = client.post(REVOKE, {**revoke_form(invitations["pending"]), "csrfmiddlewaretoken": token})
    assert r.status_code == 302
    assert Invitation.objects.get(pk=invitations["pending"].pk).status == InvitationStatus.REVOKED
