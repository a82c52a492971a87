"""The management commands a new operator needs."""

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from apps.workspaces.models import Membership, Workspace

pytestmark = pytest.mark.django_db


def test_create_workspace_creates_the_owner_and_refuses_a_duplicate(capsys):
    call_command("create_workspace", "acme", "--name", "Acme", "--owner", "alice", "--password", "pw-alice-123")
    assert Membership.objects.get(workspace__slug="acme").role == "owner"
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_workspace", "acme", "--owner", "alice")
    call_command("create_workspace", "acme", "--owner", "alice", "--if-missing")
    assert Workspace.objects.count() == 1


def test_create_workspace_needs_a_password_for_a_new_user():
    with pytest.raises(CommandError, match="give --password"):
        call_command("create_workspace", "acme", "--owner", "nobody")
    assert not Workspace.objects.exists()


def test_issue_token_prints_a_working_token(capsys, client):
    call_command("create_workspace", "acme", "--owner", "alice", "--password", "pw-alice-123")
    capsys.readouterr()
    call_command("issue_token", "alice")
    key = capsys.readouterr().out.strip()
    assert Token.objects.get(user__username="alice").key == key
    assert client.get("/api/v1/workspaces/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    call_command("issue_token", "alice", "--rotate")
    assert capsys.readouterr().out.strip() != key
    with pytest.raises(CommandError, match="no user named"):
        call_command("issue_token", "ghost")


def test_add_member_sets_a_role():
    call_command("create_workspace", "acme", "--owner", "alice", "--password", "pw-alice-123")
    call_command("add_member", "acme", "bob", "--role", "viewer", "--password", "pw-bob-123")
    assert Membership.objects.get(user__username="bob").role == "viewer"
    with pytest.raises(CommandError, match="keeps at least one owner"):
        call_command("add_member", "acme", "alice", "--role", "viewer")
