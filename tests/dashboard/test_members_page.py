"""The members page: everyone sees who is in the workspace; owners and admins manage them, within the owner rules."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent
from apps.workspaces.models import Membership

PAGE = "/w/acme/members/"


@pytest.fixture
def frank(users):
    """Has an account on the installation, belongs to no workspace yet."""
    return get_user_model().objects.create_user(
        username="frank", password="frank-password", first_name="Frank", last_name="Ocean", email="frank@example.org"
    )


def pk(name: str, slug: str = "acme") -> int:
    return Membership.objects.get(workspace__slug=slug, user__username=name).pk


def snapshot():
    return (
        sorted(Membership.objects.values_list("workspace__slug", "user__username", "role")),
        AuditEvent.objects.count(),
    )


def roles() -> dict[str, str]:
    return dict(Membership.objects.filter(workspace__slug="acme").values_list("user__username", "role"))


def test_owner_sees_every_member_and_every_action(browser_client, frank):
    body = browser_client("alice").get(PAGE).content.decode()
    for name in ("alice", "erin", "carol", "dave", "bob"):
        assert f"<strong>{name}</strong>" in body
    assert "charlie" not in body and "frank" not in body
    assert "Add member" in body and f'id="role-{pk("bob")}"' in body
    assert 'action="/w/acme/members/{}/remove"'.format(pk("erin")) in body
    # The only owner gets no controls on her own row, only the reason why.
    assert f'id="role-{pk("alice")}"' not in body and "Last owner" in body
    assert '<a href="/w/acme/members/" aria-current="page">Members</a>' in body


def test_full_name_and_email_are_shown(browser_client, frank):
    browser_client("alice").post("/w/acme/members/add", {"username": "frank", "role": "member"})
    body = browser_client("bob").get(PAGE).content.decode()
    assert "Frank Ocean · frank@example.org" in body


def test_owner_adds_changes_and_removes_with_a_message_each(browser_client, frank):
    client = browser_client("alice")
    r = client.post("/w/acme/members/add", {"username": " frank ", "role": "approver"}, follow=True)
    assert "frank is now approver here." in r.content.decode()
    assert roles()["frank"] == "approver"

    r = client.post(f"/w/acme/members/{pk('frank')}/role", {"role": "admin"}, follow=True)
    assert "frank&#x27;s role is now admin." in r.content.decode()
    assert roles()["frank"] == "admin"

    r = client.post(f"/w/acme/members/{pk('frank')}/remove", follow=True)
    assert r.redirect_chain == [(PAGE, 302)]
    assert "Removed frank from the workspace." in r.content.decode()
    assert "frank" not in roles()
    verbs = list(AuditEvent.objects.filter(source="ui").order_by("created_at").values_list("verb", flat=True))
    assert verbs == ["member.set", "member.role_changed", "member.removed"]


def test_owner_makes_another_owner_and_can_then_step_down(browser_client):
    client = browser_client("alice")
    client.post(f"/w/acme/members/{pk('erin')}/role", {"role": "owner"})
    client.post(f"/w/acme/members/{pk('alice')}/role", {"role": "admin"})
    assert roles()["erin"] == "owner" and roles()["alice"] == "admin"


def test_admin_cannot_make_someone_owner(browser_client, frank):
    client = browser_client("erin")
    body = client.get(PAGE).content.decode()
    assert '<option value="owner"' not in body
    before = snapshot()
    r = client.post(f"/w/acme/members/{pk('bob')}/role", {"role": "owner"}, follow=True)
    assert r.status_code == 200 and "only an owner can make someone an owner" in r.content.decode()
    r = client.post("/w/acme/members/add", {"username": "frank", "role": "owner"})
    assert r.status_code == 400 and "only an owner can make someone an owner" in r.content.decode()
    assert snapshot() == before


def test_admin_cannot_touch_or_remove_the_owner(browser_client):
    client = browser_client("erin")
    body = client.get(PAGE).content.decode()
    assert f'action="/w/acme/members/{pk("alice")}/remove"' not in body
    before = snapshot()
    r = client.post(f"/w/acme/members/{pk('alice')}/remove", follow=True)
    assert "only an owner can change or remove an owner" in r.content.decode()
    r = client.post(f"/w/acme/members/{pk('alice')}/role", {"role": "viewer"}, follow=True)
    assert "only an owner can change or remove an owner" in r.content.decode()
    assert snapshot() == before


def test_admin_manages_everyone_below_owner(browser_client):
    client = browser_client("erin")
    client.post(f"/w/acme/members/{pk('bob')}/role", {"role": "approver"})
    client.post(f"/w/acme/members/{pk('dave')}/remove")
    assert roles() == {"alice": "owner", "erin": "admin", "carol": "approver", "bob": "approver"}


def test_the_last_owner_cannot_be_demoted_or_removed(browser_client):
    client = browser_client("alice")
    before = snapshot()
    r = client.post(f"/w/acme/members/{pk('alice')}/role", {"role": "admin"}, follow=True)
    assert "keeps at least one owner" in r.content.decode()
    r = client.post(f"/w/acme/members/{pk('alice')}/remove", follow=True)
    assert "keeps at least one owner" in r.content.decode()
    r = client.post("/w/acme/members/add", {"username": "alice", "role": "viewer"})
    assert r.status_code == 400 and "keeps at least one owner" in r.content.decode()
    assert snapshot() == before


def test_unknown_username_gives_a_message_and_changes_nothing(browser_client):
    before = snapshot()
    r = browser_client("alice").post("/w/acme/members/add", {"username": "ghost", "role": "member"})
    assert r.status_code == 400
    body = r.content.decode()
    assert "no user named &#x27;ghost&#x27;" in body
    assert 'value="ghost"' in body  # the form keeps what was typed
    assert "Traceback" not in body
    assert snapshot() == before


@pytest.mark.parametrize(
    ("url", "form"),
    [
        ("/w/acme/members/add", {"username": "", "role": "member"}),
        ("/w/acme/members/add", {"username": "bob", "role": "king"}),
        ("/w/acme/members/add", {}),
        ("/w/acme/members/{bob}/role", {"role": "king"}),
        ("/w/acme/members/{bob}/role", {}),
    ],
    ids=["no-username", "add-unknown-role", "empty-add", "change-unknown-role", "empty-change"],
)
def test_bad_input_is_a_message_never_an_error_page(browser_client, url, form):
    before = snapshot()
    r = browser_client("alice").post(url.format(bob=pk("bob")), form, follow=True)
    assert r.status_code in (200, 400)
    body = r.content.decode()
    assert "Traceback" not in body
    assert "This field is required." in body or "unknown role" in body
    assert snapshot() == before


@pytest.mark.parametrize("who", ["carol", "dave", "bob"])
def test_below_admin_sees_the_list_without_actions_and_cannot_post(browser_client, frank, who):
    client = browser_client(who)
    body = client.get(PAGE).content.decode()
    assert "<strong>alice</strong>" in body and "<strong>bob</strong>" in body
    for action in ("Add member", "Change role", "Remove", "/members/add", '<select id="role-'):
        assert action not in body, action
    before = snapshot()
    for url, form in (
        ("/w/acme/members/add", {"username": "frank", "role": "admin"}),
        (f"/w/acme/members/{pk(who)}/role", {"role": "owner"}),
        (f"/w/acme/members/{pk('alice')}/remove", {}),
    ):
        r = client.post(url, form)
        assert r.status_code == 403, url
        assert b"You can't do that here" in r.content
    assert snapshot() == before


def test_charlie_sees_nothing_and_changes_nothing(browser_client):
    client = browser_client("charlie")
    before = snapshot()
    assert client.get(PAGE).status_code == 404
    assert client.post(f"/w/acme/members/{pk('bob')}/remove").status_code == 404
    # His own workspace's URL with an acme membership id: still nothing.
    assert client.post(f"/w/globex/members/{pk('bob')}/role", {"role": "owner"}).status_code == 404
    assert snapshot() == before


def test_another_workspaces_membership_is_a_404_here(browser_client):
    before = snapshot()
    r = browser_client("alice").post(f"/w/acme/members/{pk('charlie', 'globex')}/remove")
    assert r.status_code == 404
    assert snapshot() == before


def test_an_admin_who_leaves_goes_home(browser_client):
    client = browser_client("erin")
    r = client.post(f"/w/acme/members/{pk('erin')}/remove")
    assert r.status_code == 302 and r["Location"] == "/"
    assert "erin" not in roles()


def test_actions_need_post(browser_client):
    client = browser_client("alice")
    assert client.get("/w/acme/members/add").status_code == 405
    assert client.get(f"/w/acme/members/{pk('bob')}/remove").status_code == 405
    assert roles()["bob"] == "viewer"


def test_anonymous_is_sent_to_log_in(browser_client, users):
    r = browser_client(None).get(PAGE)
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")
