"""Each workspace's own data folders: `<root>/<workspace-slug>/` under every configured data root.

A workspace registers, lists and runs jobs on files under its own folders only. A
path is judged by where it really leads (symlinks followed), never by how it is
spelled, and a path that leads elsewhere is refused without looking at what is
there, so the answer never tells whether another workspace's file exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from django.conf import settings

from apps.datasets.inspect import DataFileError

DATA_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv", ".txt")


class HasSlug(Protocol):
    slug: str


def workspace_folders(workspace: HasSlug) -> list[Path]:
    """`<root>/<slug>` for every data root, in the roots' order (they may not exist yet)."""
    return [Path(root) / workspace.slug for root in settings.FEDSITE_DATA_ROOTS]


def ensure_workspace_folders(workspace: HasSlug) -> list[Path]:
    """Create the workspace's folder under every existing root it can write to; return those that exist."""
    made: list[Path] = []
    for folder in workspace_folders(workspace):
        if folder.parent.is_dir():
            try:
                folder.mkdir(mode=0o750, exist_ok=True)
            except OSError:
                continue  # a read-only root: the operator creates the folder
        if folder.is_dir():
            made.append(folder)
    return made


def _real(folders: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        try:
            out.append(folder.resolve())
        except (OSError, RuntimeError):  # a symlink loop where the folder should be
            continue
    return out


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _outside(raw: str, folders: list[Path], field: str = "uri") -> DataFileError:
    where = ", ".join(str(f) for f in folders)
    return DataFileError(f"{raw} is outside this workspace's data folders ({where})", field=field)


def resolve_in_workspace(workspace: HasSlug, uri: str, *, folder: bool = False, field: str = "uri") -> Path:
    """The real path of a data file (or, with `folder`, a folder) of this workspace, from a path or file:// URI.

    Relative paths are looked up in the workspace's folders in order. `..` is refused
    outright; an absolute path must be spelled under one of the workspace's folders
    and must still lie there once every symlink on the way is followed.
    """
    raw = uri.strip()
    if raw.startswith("file://"):
        raw = raw[len("file://") :]
    if not raw:
        raise DataFileError("uri is empty", field=field)
    if "\x00" in raw:
        raise DataFileError("uri contains a NUL byte", field=field)
    folders = workspace_folders(workspace)
    given = Path(raw)
    if ".." in given.parts:
        raise DataFileError(
            "uri: '..' is not allowed; give the file's path inside your workspace's folder", field=field
        )
    real_folders = _real(folders)
    if given.is_absolute():
        # Spelled under one of our folders (as configured, or as it really is), before touching the disk.
        if not _inside(given, folders) and not _inside(given, real_folders):
            raise _outside(raw, folders, field)
        candidates = [given]
    else:
        candidates = [folder / given for folder in folders]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except RuntimeError:
            raise DataFileError(f"{raw}: a symlink loop", field=field) from None
        except OSError as exc:
            raise DataFileError(f"{raw}: {exc.strerror or exc}", field=field) from None
        if not _inside(resolved, real_folders):
            raise _outside(raw, folders, field)
        try:
            exists, is_file = resolved.exists(), resolved.is_file()
        except OSError as exc:  # e.g. a name too long for the filesystem
            raise DataFileError(f"{raw}: {exc.strerror or exc}", field=field) from None
        if exists and is_file == folder:
            raise DataFileError(f"{raw} is not a {'folder' if folder else 'file'}", field=field)
        if exists:
            return resolved
    where = ", ".join(str(f) for f in folders)
    raise DataFileError(f"{raw} does not exist in this workspace's data folders ({where})", field=field)


def workspace_files(workspace: HasSlug, *, limit: int = 200) -> list[str]:
    """Data files in the workspace's folders (never one a symlink leads out to), for the form's suggestions."""
    found: list[str] = []
    real_folders = _real(workspace_folders(workspace))
    for folder in workspace_folders(workspace):
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into symlinked folders
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.lower().endswith(DATA_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                try:
                    if not (_inside(path.resolve(), real_folders) and path.is_file()):
                        continue
                except (OSError, RuntimeError):
                    continue
                found.append(str(path))
                if len(found) >= limit:
                    return found
    return found


def lies_in_workspace(workspace: HasSlug, path: str | Path) -> bool:
    """Whether a stored path still leads into the workspace's folders (checked again at every launch)."""
    try:
        return _inside(Path(path).resolve(), _real(workspace_folders(workspace)))
    except (OSError, RuntimeError):
        return False
