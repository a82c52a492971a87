"""A runtime's result file is read only from inside its own job folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.jobs.launchers.base import read_result_file


def _job(root: Path, name: str, result: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_a_result_inside_the_folder_is_read(tmp_path):
    job = _job(tmp_path, "a", {"psi": {"intersection_size": 3}})
    assert read_result_file(job / "result.json") == {"psi": {"intersection_size": 3}}
    assert read_result_file(_job(tmp_path, "empty") / "result.json") == {}
    # a symlink that stays inside the folder is fine
    (job / "real.json").write_text(json.dumps({"train": {"auc": 0.9}}))
    (job / "result.json").unlink()
    (job / "result.json").symlink_to(job / "real.json")
    assert read_result_file(job / "result.json") == {"train": {"auc": 0.9}}


def test_a_result_that_leads_to_another_jobs_folder_is_refused(tmp_path):
    other = _job(tmp_path, "other", {"psi": {"intersection_size": 99}})
    mine = _job(tmp_path, "mine")
    (mine / "result.json").symlink_to(other / "result.json")
    with pytest.raises(ValueError, match="leads outside its job's folder"):
        read_result_file(mine / "result.json")
    (mine / "result.json").unlink()
    (mine / "result.json").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="leads outside"):
        read_result_file(mine / "result.json")
    # the folder itself replaced by a link to another job's folder
    swapped = tmp_path / "swapped"
    swapped.symlink_to(other)
    with pytest.raises(ValueError, match="is a symlink"):
        read_result_file(swapped / "result.json")


def test_a_symlink_loop_or_a_bad_file_is_a_clear_error(tmp_path):
    job = _job(tmp_path, "loop")
    (job / "result.json").symlink_to(job / "result.json")
    with pytest.raises(ValueError):
        read_result_file(job / "result.json")
    bad = _job(tmp_path, "bad")
    (bad / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_result_file(bad / "result.json")
