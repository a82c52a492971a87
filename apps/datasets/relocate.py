"""Moving datasets registered before workspaces had folders into their workspace's folder.

A file at `<root>/<path>` moves to `<root>/<slug>/<path>` (same root, same path
below it). A file several workspaces registered is copied into each instead, so
no workspace's dataset loses its file. Used by `manage.py migrate_data_folders`.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.audit.services import record
from apps.datasets.folders import lies_in_workspace
from apps.datasets.models import Dataset
from apps.jobs.choices import ACTIVE


@dataclass
class Relocation:
    """Where one dataset's file goes, or why it stays."""

    dataset: Dataset
    source: Path
    target: Path | None = None
    copy: bool = False
    problem: str = ""


def _root_of(path: Path) -> Path | None:
    for root in settings.FEDSITE_DATA_ROOTS:
        root = Path(root).resolve()
        if root in path.parents:
            return root
    return None


def plan_relocations(*, copy_all: bool = False) -> list[Relocation]:
    """One entry per dataset whose file is not in its workspace's folders."""
    datasets = list(Dataset.objects.select_related("workspace").order_by("workspace__slug", "name"))
    users_of: dict[str, set[object]] = {}
    for ds in datasets:
        users_of.setdefault(ds.uri, set()).add(ds.workspace_id)
    plan: list[Relocation] = []
    for ds in datasets:
        if lies_in_workspace(ds.workspace, ds.uri):
            continue
        source = Path(ds.uri)
        move = Relocation(ds, source, copy=copy_all or len(users_of[ds.uri]) > 1)
        plan.append(move)
        root = _root_of(source)
        if root is None:
            roots = ", ".join(str(r) for r in settings.FEDSITE_DATA_ROOTS)
            move.problem = f"{source} lies outside every data root ({roots}); register it again from its folder"
            continue
        move.target = root / ds.workspace.slug / source.relative_to(root)
        if ds.tickets.filter(jobs__status__in=ACTIVE).exists():
            move.problem = "a job reading it is running; run the command again once it has ended"
        elif move.target.exists():
            if move.target.stat().st_size != ds.size_bytes:
                move.problem = f"{move.target} exists already with other content; move one of them by hand"
        elif not source.is_file():
            move.problem = f"its file {source} is missing"
    return plan


def _copy(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)  # never a half-copied file under the final name


def relocate(move: Relocation) -> str:
    """Move or copy the file, then point the dataset at it (audited). Returns an error or ''."""
    assert move.target is not None and not move.problem
    ds, target = move.dataset, move.target
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if move.copy:
                _copy(move.source, target)
            else:
                try:
                    os.rename(move.source, target)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy(move.source, target)  # another filesystem: copy, then drop the original
                    move.source.unlink()
    except OSError as exc:
        return f"could not {'copy' if move.copy else 'move'} {move.source} to {target}: {exc.strerror or exc}"
    with transaction.atomic():
        Dataset.objects.filter(pk=ds.pk).update(uri=str(target.resolve()))
        record(
            ds.workspace,
            "dataset.relocated",
            ds,
            source="cli",
            data={"from": str(move.source), "to": str(target), "copied": move.copy},
        )
    return ""
