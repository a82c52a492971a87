"""Each workspace has its own data folder: acme can neither register, list, stat nor use globex's files.

Dave is a member of acme (folder `<root>/acme/`); globex's file lies in
`<root>/globex/`. Every spelling of a path to it is refused with the same answer
as a path to a file that does not exist there, and nothing of the file is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.datasets.folders import workspace_files
from apps.datasets.models import Dataset
from apps.workspaces.models import Workspace
from runtime.config import parse_config
from runtime.errors import ConfigError
from tests.foundation.factories import labelled_csv

pytestmark = pytest.mark.django_db
URL = "/api/v1/workspaces/acme/datasets/"


@pytest.fixture
def globex_file(data_root: Path) -> Path:
    return labelled_csv(data_root.parent / "globex", "secret.csv", rows=3571)


def register(api, uri: str, who: str = "dave"):
    return api(who).post(URL, {"name": "stolen", "uri": uri, "id_column": "id"}, format="json")


def spellings(acme: Path, theirs: Path) -> dict[str, str]:
    root = acme.parent
    return {
        "absolute": str(theirs),
        "file uri": f"file://{theirs}",
        "relative with ..": f"../globex/{theirs.name}",
        "absolute through acme with ..": f"{acme}/../globex/{theirs.name}",
        "relative as if from the root": f"globex/{theirs.name}",
        "double slash": f"{root}//globex/{theirs.name}",
        "dot segments": f"{root}/./globex/./{theirs.name}",
    }


def test_acme_cannot_register_globex_file_by_any_spelling(api, data_root, globex_file):
    for how, uri in spellings(data_root, globex_file).items():
        r = register(api, uri)
        assert r.status_code == 400, (how, r.content)
        assert "3571" not in str(r.json()) and "sha256" not in str(r.json()), how  # no row count, no checksum
    assert not Dataset.objects.exists()


def test_a_symlink_in_acme_folder_to_globex_file_or_folder_is_refused(api, data_root, globex_file):
    (data_root / "innocent.csv").symlink_to(globex_file)
    (data_root / "shared").symlink_to(globex_file.parent, target_is_directory=True)
    for uri in (
        str(data_root / "innocent.csv"),
        "innocent.csv",
        "shared/secret.csv",
        str(data_root / "shared/secret.csv"),
    ):
        r = register(api, uri)
        assert r.status_code == 400 and "outside this workspace's data folders" in r.json()["uri"][0], uri
    assert not Dataset.objects.exists()


def test_the_answer_is_the_same_whether_globex_file_exists_or_not(api, data_root, globex_file):
    missing = globex_file.with_name("no-such-file.csv")
    for how, uri in spellings(data_root, globex_file).items():
        there = register(api, uri)
        absent = register(api, uri.replace(globex_file.name, missing.name))
        assert there.status_code == absent.status_code == 400, how
        assert str(there.json()).replace(globex_file.name, missing.name) == str(absent.json()), how


def test_globex_registers_its_own_file_and_acme_its_own(api, data_root, globex_file):
    labelled_csv(data_root, "mine.csv", rows=5)
    assert register(api, "mine.csv").status_code == 201
    r = api("charlie").post(
        "/api/v1/workspaces/globex/datasets/", {"name": "secret", "uri": "secret.csv", "id_column": "id"}, format="json"
    )
    assert r.status_code == 201, r.content
    assert r.json()["uri"] == str(globex_file) and r.json()["row_count"] == 3571


def test_the_file_list_holds_only_the_workspace_own_files(data_root, globex_file, workspaces):
    labelled_csv(data_root, "mine.csv")
    (data_root / "link.csv").symlink_to(globex_file)
    (data_root / "shared").symlink_to(globex_file.parent, target_is_directory=True)
    assert workspace_files(workspaces["acme"]) == [str(data_root / "mine.csv")]
    assert workspace_files(workspaces["globex"]) == [str(globex_file)]


def test_the_command_line_keeps_to_the_workspace_folder_too(data_root, globex_file, users):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="outside this workspace's data folders"):
        call_command("register_dataset", "acme", "stolen", str(globex_file), "--id-column", "id", "--no-progress")
    assert not Dataset.objects.exists()


def test_a_new_workspace_gets_its_folder(api, data_root, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = api("bob").post("/api/v1/workspaces/", {"slug": "bobs-lab", "name": "Bob's lab"}, format="json")
    assert r.status_code == 201
    assert (data_root.parent / "bobs-lab").is_dir()


def test_the_runtime_refuses_a_path_leading_out_of_its_folders(data_root, globex_file):
    base = {"version": 1, "job_id": "j", "role": "leader", "listen_address": "127.0.0.1:1", "output_dir": "/tmp/o"}
    base["allow_insecure"] = True
    (data_root / "link.csv").symlink_to(globex_file)
    mine = labelled_csv(data_root, "mine.csv")
    ok = parse_config({**base, "data": {"path": str(mine), "id_column": "id", "folders": [str(data_root)]}})
    assert ok.data.path == str(mine)
    for path in (str(globex_file), str(data_root / "link.csv"), f"{data_root}/../globex/secret.csv"):
        with pytest.raises(ConfigError, match="outside this workspace's data folders"):
            parse_config({**base, "data": {"path": path, "id_column": "id", "folders": [str(data_root)]}})


# -- migrating datasets registered before workspaces had folders ------------------------------


def legacy_dataset(workspace: Workspace, path: Path, name: str) -> Dataset:
    """A dataset as registered before folders existed: its file right under the data root."""
    return Dataset.objects.create(
        workspace=workspace,
        name=name,
        uri=str(path),
        format="csv",
        id_column="id",
        schema=[{"name": "id", "type": "string"}],
        row_count=20,
        checksum="sha256:" + "0" * 64,
        size_bytes=path.stat().st_size,
    )


def test_migrate_data_folders_moves_legacy_files_into_their_workspace_folder(data_root, workspaces, capsys):
    root = data_root.parent
    (root / "2024").mkdir()
    alone = labelled_csv(root / "2024", "acme_only.csv")
    shared = labelled_csv(root, "shared.csv")
    a1 = legacy_dataset(workspaces["acme"], alone, "alone")
    a2 = legacy_dataset(workspaces["acme"], shared, "shared")
    g1 = legacy_dataset(workspaces["globex"], shared, "shared")

    call_command("migrate_data_folders")  # a dry run changes nothing
    assert "would move acme/alone" in capsys.readouterr().out
    assert alone.exists() and Dataset.objects.get(pk=a1.pk).uri == str(alone)

    call_command("migrate_data_folders", "--apply")
    assert not alone.exists()  # moved, keeping its path below the root
    assert Dataset.objects.get(pk=a1.pk).uri == str(root / "acme" / "2024" / "acme_only.csv")
    # Used by two workspaces: each gets its own copy; the original stays for the operator.
    assert Dataset.objects.get(pk=a2.pk).uri == str(root / "acme" / "shared.csv")
    assert Dataset.objects.get(pk=g1.pk).uri == str(root / "globex" / "shared.csv")
    assert (root / "acme" / "shared.csv").read_bytes() == shared.read_bytes()
    assert AuditEvent.objects.filter(verb="dataset.relocated", workspace=workspaces["acme"]).count() == 2

    call_command("migrate_data_folders", "--apply")
    assert "every dataset already lies in its workspace's folder" in capsys.readouterr().out
