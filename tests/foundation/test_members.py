"""Member management: who may add, change and remove whom, the last owner, the audit trail, and the API."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from apps.audit.models import AuditEvent
from apps.core.errors import Forbidden, ServiceError
from apps.workspaces.models import Membership
from apps.workspaces.services import add_member, change_role, remove_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def frank(users):
    """A user with an account on the installation who belongs to no workspace yet."""
    return get_user_model().objects.create_user(username="frank", password="frank-password")


def member(name: str, slug: str = "acme") -> Membership:
    return Membership.objects.select_related("workspace", "user").get(workspace__slug=slug, user__username=name)


def roles(slug: str = "acme") -> dict[str, str]:
    return dict(Membership.objects.filter(workspace__slug=slug).values_list("user__username", "role"))


# -- the service ---------------------------------------------------------------------


def test_owner_adds_changes_and_removes_a_member_with_an_audit_event_each(users, workspaces, frank):
    alice = users["alice"]
    m = add_member(workspaces["acme"], username="frank", role="viewer", acting_user=alice, source="ui")
    assert m.role == "viewer"
    change_role(m, "approver", acting_user=alice, source="ui")
    assert member("frank").role == "approver"
    remove_member(member("frank"), acting_user=alice, source="ui")
    assert "frank" not in roles()
    events = list(AuditEvent.objects.filter(workspace=workspaces["acme"]).order_by("created_at"))
    assert [e.verb for e in events] == ["member.set", "member.role_changed", "member.removed"]
    assert all(e.actor == alice and e.source == "ui" and e.data["username"] == "frank" for e in events)
    assert events[1].data == {"username": "frank", "from": "viewer", "role": "approver"}


def test_owner_makes_another_owner(users):
    change_role(member("erin"), "owner", acting_user=users["alice"])
    assert roles()["erin"] == "owner"


def test_admin_manages_members_below_owner(users, workspaces, frank):
    erin = users["erin"]
    add_member(workspaces["acme"], username="frank", role="admin", acting_user=erin)
    change_role(member("bob"), "member", acting_user=erin)
    remove_member(member("dave"), acting_user=erin)
    assert roles() == {"alice": "owner", "erin": "admin", "carol": "approver", "bob": "member", "frank": "admin"}


@pytest.mark.parametrize(
    "attempt",
    [
        lambda ws, erin: add_member(ws, username="frank", role="owner", acting_user=erin),
        lambda ws, erin: add_member(ws, username="bob", role="owner", acting_user=erin),
        lambda ws, erin: add_member(ws, username="alice", role="admin", acting_user=erin),
        lambda ws, erin: add_member(ws, username="alice", role="owner", acting_user=erin),
        lambda ws, erin: change_role(member("bob"), "owner", acting_user=erin),
        lambda ws, erin: change_role(member("erin"), "owner", acting_user=erin),
        lambda ws, erin: change_role(member("alice"), "viewer", acting_user=erin),
        lambda ws, erin: remove_member(member("alice"), acting_user=erin),
    ],
    ids=[
        "add-new-owner",
        "add-existing-as-owner",
        "demote-owner-by-adding",
        "re-add-owner",
        "promote",
        "promote-self",
        "demote-owner",
        "remove",
    ],
)
def test_admin_neither_grants_nor_touches_the_owner_role(users, workspaces, frank, attempt):
    before, events = roles(), AuditEvent.objects.count()
    with pytest.raises(Forbidden, match="only an owner"):
        attempt(workspaces["acme"], users["erin"])
    assert roles() == before and AuditEvent.objects.count() == events


@pytest.mark.parametrize("who", ["carol", "dave", "bob", "charlie"])
def test_only_owners_and_admins_manage_members(users, workspaces, frank, who):
    before = roles()
    actor = users[who]
    with pytest.raises(Forbidden, match="only owners and admins manage members"):
        add_member(workspaces["acme"], username="frank", role="viewer", acting_user=actor)
    with pytest.raises(Forbidden):
        change_role(member("bob"), "admin", acting_user=actor)
    with pytest.raises(Forbidden):
        remove_member(member("bob"), acting_user=actor)
    assert roles() == before


def test_the_last_owner_is_never_demoted_or_removed(users):
    alice = users["alice"]
    for attempt in (
        lambda: change_role(member("alice"), "admin", acting_user=alice),
        lambda: remove_member(member("alice"), acting_user=alice),
        lambda: add_member(member("alice").workspace, username="alice", role="viewer", acting_user=alice),
        lambda: add_member(member("alice").workspace, username="alice", role="viewer", acting_user=None, source="cli"),
    ):
        with pytest.raises(ServiceError, match="keeps at least one owner"):
            attempt()
    assert roles()["alice"] == "owner"


def test_an_owner_steps_down_once_there_is_another(users):
    alice = users["alice"]
    change_role(member("erin"), "owner", acting_user=alice)
    change_role(member("alice"), "admin", acting_user=alice)
    assert roles()["alice"] == "admin" and roles()["erin"] == "owner"
    # Alice is an admin now: the new owner is out of her reach.
    with pytest.raises(Forbidden):
        remove_member(member("erin"), acting_user=alice)


def test_unknown_user_or_role_is_named_and_changes_nothing(users, workspaces):
    before, events = roles(), AuditEvent.objects.count()
    with pytest.raises(ServiceError, match="no user named 'ghost'") as exc:
        add_member(workspaces["acme"], username="ghost", role="viewer", acting_user=users["alice"])
    assert exc.value.field == "username"
    with pytest.raises(ServiceError, match="unknown role 'king'") as exc:
        add_member(workspaces["acme"], username="bob", role="king", acting_user=users["alice"])
    assert exc.value.field == "role"
    with pytest.raises(ServiceError, match="unknown role 'king'"):
        change_role(member("bob"), "king", acting_user=users["alice"])
    assert roles() == before and AuditEvent.objects.count() == events


def test_setting_the_same_role_again_records_nothing(users, workspaces):
    events = AuditEvent.objects.count()
    change_role(member("bob"), "viewer", acting_user=users["alice"])
    add_member(workspaces["acme"], username="bob", role="viewer", acting_user=users["alice"])
    assert AuditEvent.objects.count() == events


def test_the_command_line_may_make_an_owner(users, workspaces, frank):
    add_member(workspaces["acme"], username="frank", role="owner", acting_user=None, source="cli")
    assert roles()["frank"] == "owner"
    assert AuditEvent.objects.get(verb="member.set").source == "cli"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_two_owners_demoting_each_other_at_once_leave_one_owner(users):
    change_role(member("erin"), "owner", acting_user=users["alice"])
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor: str, target: str) -> None:
        try:
            barrier.wait()
            change_role(member(target), "admin", acting_user=users[actor])
            outcomes.append("ok")
        except ServiceError as exc:
            outcomes.append(exc.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=p) for p in (("alice", "erin"), ("erin", "alice"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The second to run is refused, as an admin now or as the last owner.
    assert outcomes.count("ok") == 1, outcomes
    assert list(roles().values()).count("owner") == 1


# -- the API ---------------------------------------------------------------------------


def url(pk: int | None = None) -> str:
    return "/api/v1/workspaces/acme/members/" + (f"{pk}/" if pk else "")


def test_api_changes_a_role_with_patch(api, users):
    r = api("alice").patch(url(member("bob").pk), {"role": "approver"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["role"] == "approver" and r.json()["username"] == "bob"
    assert AuditEvent.objects.get(verb="member.role_changed").source == "api"


def test_api_refuses_an_admin_making_an_owner_with_403(api, users):
    r = api("erin").patch(url(member("bob").pk), {"role": "owner"}, format="json")
    assert r.status_code == 403
    assert "only an owner" in r.json()["detail"]
    r = api("erin").delete(url(member("alice").pk))
    assert r.status_code == 403
    r = api("erin").post(url(), {"username": "bob", "role": "owner"}, format="json")
    assert r.status_code == 403
    assert roles()["bob"] == "viewer" and roles()["alice"] == "owner"


def test_api_keeps_the_last_owner(api, users):
    r = api("alice").patch(url(member("alice").pk), {"role": "viewer"}, format="json")
    assert r.status_code == 400
    assert "keeps at least one owner" in r.json()["role"][0]
    r = api("alice").delete(url(member("alice").pk))
    assert r.status_code == 400
    assert "keeps at least one owner" in r.json()["detail"]
    assert roles()["alice"] == "owner"


def test_api_answers_bad_input_with_400_naming_the_field(api, users):
    r = api("alice").patch(url(member("bob").pk), {"role": "king"}, format="json")
    assert r.status_code == 400 and "role" in r.json()
    r = api("alice").patch(url(member("bob").pk), {}, format="json")
    assert r.status_code == 400 and "role" in r.json()
    r = api("alice").post(url(), {"username": "ghost", "role": "viewer"}, format="json")
    assert r.status_code == 400 and "no user named 'ghost'" in r.json()["username"][0]
    assert roles()["bob"] == "viewer" and "ghost" not in roles()


def test_api_role_change_needs_admin_and_the_workspace(api, users):
    pk = member("dave").pk
    for who in ("carol", "dave", "bob"):
        assert api(who).patch(url(pk), {"role": "admin"}, format="json").status_code == 403
    assert api("charlie").patch(url(pk), {"role": "admin"}, format="json").status_code == 404
    assert (
        api("charlie").patch(f"/api/v1/workspaces/globex/members/{pk}/", {"role": "admin"}, format="json").status_code
        == 404
    )
    assert api(None).patch(url(pk), {"role": "admin"}, format="json").status_code == 401
    assert roles()["dave"] == "member"


def test_api_has_no_put_on_members(api, users):
    assert api("alice").put(url(member("bob").pk), {"role": "admin"}, format="json").status_code == 405
