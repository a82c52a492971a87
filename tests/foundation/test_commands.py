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


def test_register_dataset_shows_progress_and_saves_what_the_api_would(capsys, data_root):
    from apps.audit.models import AuditEvent
    from apps.datasets.models import Dataset
    from tests.foundation.factories import labelled_csv, write_csv

    call_command("create_workspace", "acme", "--owner", "alice", "--password", "pw-alice-123")
    path = labelled_csv(data_root, rows=5000)
    capsys.readouterr()
    call_command("register_dataset", "acme", "labels", str(path), "--id-column", "id", "--label-column", "label")
    out, err = capsys.readouterr()
    ds = Dataset.objects.get(workspace__slug="acme", name="labels")
    assert ds.row_count == 5000 and ds.label_column == "label" and ds.size_bytes == path.stat().st_size
    assert "5,000 rows" in out and ds.checksum in out
    assert "inspecting labels" in err and "100%" in err  # the progress bar reached the end
    assert AuditEvent.objects.get(verb="dataset.registered").source == "cli"
    # Bad input: the service's message, no traceback, nothing saved.
    bad = write_csv(data_root, "dups.csv", "id,x\na,1\na,2\n")
    with pytest.raises(CommandError, match="id_column: id column 'id' has duplicates"):
        call_command("register_dataset", "acme", "dups", str(bad), "--id-column", "id", "--no-progress")
    with pytest.raises(CommandError, match="no workspace 'nope'"):
        call_command("register_dataset", "nope", "x", str(path), "--id-column", "id")
    with pytest.raises(CommandError, match="'ghost' is not a member of acme"):
        call_command("register_dataset", "acme", "x", str(path), "--id-column", "id", "--user", "ghost")
    assert Dataset.objects.count() == 1


def test_inspection_reports_progress_up_to_the_whole_file(data_root):
    from apps.datasets.inspect import inspect_file
    from tests.foundation.factories import labelled_csv

    path = labelled_csv(data_root, rows=200_000)
    seen: list[tuple[int, int]] = []
    inspect_file(path, "id", "label", lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert len(seen) > 1 and all(total == size for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == size
