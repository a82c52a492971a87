"""A job's outputs on this side: listed, downloaded, registered as datasets.

Outputs are files the runtime wrote under this side's output folder (the launcher's
``output_dir``): a PSI step's aligned table and a score step's scores (the leader's
only). A name is looked up in a fixed table, never joined onto a path, and a file
is listed and served only when its real path (symlinks resolved) stays inside the
job's folder: a runtime that leaves a symlink to another job's folder or to /etc
gets nothing served through it. A Kubernetes job's folder is derived from the
current settings (the outputs claim's mount, the job id and side), never from a
path stored on the job. A folder this installation cannot read is a 404 naming
why, not an empty list. Registering copies the file (a hard link when the
filesystem allows) into the workspace's own data folder, then registers it like
any other dataset.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.db import transaction

from apps.core.errors import NotFound, ServiceError
from apps.datasets.folders import ensure_workspace_folders
from apps.datasets.models import Dataset
from apps.jobs.models import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputKind:
    kind: str
    relative: str  # under the side's output_dir
    description: str


# name → what it is and where the runtime writes it (runtime/psi/common.py, runtime/train/score.py).
OUTPUTS: dict[str, OutputKind] = {
    "aligned": OutputKind(
        "psi_aligned", "psi/aligned.csv", "this side's rows of the intersection, in the shared order"
    ),
    "scores": OutputKind("scores", "score/scores.csv", "id, score of every scored row (the leader's only)"),
}
CONTENT_TYPE = "text/csv"
SUBFOLDER = "job-outputs"


@dataclass(frozen=True)
class JobOutput:
    name: str
    kind: str
    path: Path  # the real path (symlinks resolved), inside `root`
    size_bytes: int
    description: str
    root: Path  # the real path of the job's output folder on this side

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "description": self.description,
            "content_type": CONTENT_TYPE,
        }


class OutputsUnreadable(NotFound):
    """This installation cannot read the job's output folder (the API answers 404 with the reason)."""

    def __init__(self, job: Job, why: str) -> None:
        super().__init__(f"job {job.id}'s outputs are not readable here: {why}")
        self.why = why


def _kubernetes_dir(job: Job) -> Path:
    """<mount>/<job>/<side> from the current settings (what the pod wrote to through its volume's subPath)."""
    from apps.jobs.launchers.kubernetes import mounted_output_dir

    settings_named = "FEDSITE_K8S_OUTPUT_PVC and FEDSITE_K8S_OUTPUT_MOUNT"
    root = mounted_output_dir(str(job.id), job.role)
    if root is None:
        raise OutputsUnreadable(
            job, f"this installation does not mount the runtime pods' outputs claim (set {settings_named})"
        )
    mount = root.parent.parent
    if not mount.is_dir():
        raise OutputsUnreadable(job, f"the outputs claim is not mounted at {mount}")
    if not os.access(mount, os.R_OK | os.X_OK):
        raise OutputsUnreadable(job, f"the outputs claim's mount {mount} cannot be read by this process")
    try:
        inside = root.resolve().is_relative_to(mount.resolve())
    except (OSError, RuntimeError) as exc:
        raise OutputsUnreadable(job, f"its folder {root} cannot be resolved ({exc})") from None
    if not inside:
        raise OutputsUnreadable(job, f"its folder {root} leads outside the outputs claim")
    return root


def output_dir(job: Job) -> Path | None:
    """This side's runtime output folder; None while no runtime has been started for the job here.

    The local launcher's folder (on the host that ran it), or a Kubernetes runtime's folder on the outputs claim
    where the workers and the web mount it (FEDSITE_K8S_OUTPUT_PVC and FEDSITE_K8S_OUTPUT_MOUNT). OutputsUnreadable
    when this installation cannot read it.
    """
    handle = job.handle or {}
    if (handle.get("backend") or job.launcher) == "kubernetes":
        return _kubernetes_dir(job)
    raw = handle.get("output_dir")
    if not raw:
        return None
    host = handle.get("host")
    if host and host != socket.gethostname():
        raise OutputsUnreadable(job, f"its runtime ran on {host}, not on this host ({socket.gethostname()})")
    root = Path(raw)
    if not root.is_dir():
        raise OutputsUnreadable(job, f"its folder {root} does not exist")
    return root


def _inside(path: Path, root: Path) -> Path | None:
    """`path`'s real path when it is a regular file inside `root` (a real path), else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not real.is_relative_to(root):
        log.warning("output %s leads outside its job's folder (to %s): not listed", path, real)
        return None
    return real if real.is_file() else None


def job_outputs(job: Job) -> list[JobOutput]:
    """The outputs that exist on this side, in the table's order (OutputsUnreadable: the folder cannot be read)."""
    root = output_dir(job)
    if root is None or not root.exists():  # nothing started, or a pod that has not written yet
        return []
    try:
        real_root = root.resolve(strict=True)
        os.listdir(real_root)
    except (OSError, RuntimeError) as exc:
        raise OutputsUnreadable(job, f"its folder {root} cannot be read ({exc.__class__.__name__}: {exc})") from None
    found: list[JobOutput] = []
    for name, spec in OUTPUTS.items():
        real = _inside(root / spec.relative, real_root)
        if real is None:
            continue
        try:
            size = real.stat().st_size
        except OSError:
            continue
        found.append(JobOutput(name, spec.kind, real, size, spec.description, real_root))
    return found


def get_output(job: Job, name: str) -> JobOutput:
    """One output of this side by name, else NotFound (an unknown name and a missing file read the same)."""
    outputs = job_outputs(job)
    for out in outputs:
        if out.name == name:
            return out
    known = ", ".join(o.name for o in outputs) or "none yet"
    raise NotFound(f"job {job.id} has no output {name[:60]!r} on this side (outputs: {known})")


def open_output(out: JobOutput) -> BinaryIO:
    """The output's file, opened; NotFound if what was opened is not inside the job's folder after all
    (a path swapped for a symlink between listing and opening)."""
    try:
        fd = os.open(out.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise NotFound(f"output {out.name!r} is no longer there") from None
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc: the final component was not a symlink (O_NOFOLLOW), the rest was resolved
        opened = out.path
    if not opened.is_relative_to(out.root):
        os.close(fd)
        log.warning("output %s led outside its job's folder (to %s) when opened: not served", out.path, opened)
        raise NotFound(f"output {out.name!r} is no longer there")
    return os.fdopen(fd, "rb")


def _header(out: JobOutput) -> list[str]:
    with open_output(out) as f:
        return [c.strip().strip('"') for c in f.readline().decode("utf-8", "replace").rstrip("\r\n").split(",")]


def _destination(job: Job, out: JobOutput) -> Path:
    folders = ensure_workspace_folders(job.workspace)
    if not folders:
        raise ServiceError("this workspace has no writable data folder to copy the output into", field="name")
    dest_dir = folders[0] / SUBFOLDER / str(job.id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    return dest_dir / f"{out.name}.csv"


def _copy(out: JobOutput, dest: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy; atomic either way. Either way
    the file is the one opened inside the job's folder (open_output)."""
    tmp = dest.parent / f".{dest.name}.tmp"
    tmp.unlink(missing_ok=True)
    with open_output(out) as src:
        opened = os.fstat(src.fileno())
        try:
            os.link(out.path, tmp, follow_symlinks=False)
            linked = tmp.lstat()
            if (linked.st_dev, linked.st_ino) != (opened.st_dev, opened.st_ino):
                tmp.unlink()
                raise OSError("the output changed between opening and linking")
        except OSError:
            with tmp.open("wb") as f:
                shutil.copyfileobj(src, f)
    tmp.replace(dest)


NAME_RE = re.compile(r"^[^\x00-\x1f/\\]{1,120}$")


def register_output(
    job: Job, name: str, *, dataset_name: str, description: str = "", acting_user: Any = None, source: str = "api"
) -> Dataset:
    """Register this side's output `name` of `job` as a dataset of the job's workspace named `dataset_name`."""
    from apps.datasets.services import register_dataset

    dataset_name = (dataset_name or "").strip()
    if not dataset_name:
        raise ServiceError("name the dataset", field="name")
    if not NAME_RE.match(dataset_name):
        raise ServiceError("a dataset name is 1 to 120 characters without control characters or slashes", field="name")
    if Dataset.objects.filter(workspace=job.workspace, name=dataset_name).exists():
        raise ServiceError(f"a dataset named {dataset_name!r} already exists", field="name")
    out = get_output(job, name)
    ticket = job.ticket
    id_column = ticket.local_dataset.id_column if ticket.local_dataset else ""
    columns = _header(out)
    if not id_column or id_column not in columns:
        id_column = columns[0] if columns and columns[0] else ""
    label = ticket.local_dataset.label_column if ticket.local_dataset else ""
    label = label if label and out.kind == "psi_aligned" and label in columns else ""
    dest = _destination(job, out)
    if not dest.exists() or dest.stat().st_size != out.size_bytes:
        _copy(out, dest)
    return register_dataset(
        job.workspace,
        name=dataset_name,
        uri=str(dest),
        id_column=id_column,
        label_column=label,
        description=description or f"{out.kind} of job {job.id} ({ticket.name}, attempt {job.attempt})",
        acting_user=acting_user,
        source=source,
    )


def scores_dataset_name(job: Job) -> str:
    suffix = f" — scores #{job.attempt}"
    return job.ticket.name[: 120 - len(suffix)] + suffix


def register_scores(job_id: str) -> Dataset | None:
    """After a score job succeeds on the leader: its scores become a dataset (idempotent; the name is derived)."""
    job = Job.objects.select_related("ticket", "workspace").filter(pk=job_id).first()
    if job is None:
        return None
    try:
        outputs = job_outputs(job)
    except OutputsUnreadable as exc:  # the job page says why; the file stays where the runtime wrote it
        _note(job, {"error": exc.message})
        return None
    if not any(o.name == "scores" for o in outputs):
        return None
    name = scores_dataset_name(job)
    existing = Dataset.objects.filter(workspace=job.workspace, name=name).first()
    try:
        dataset = existing or register_output(job, "scores", dataset_name=name, source="system")
    except ServiceError as exc:  # e.g. no writable data folder: the job page says why, the file stays
        _note(job, {"error": exc.message})
        return None
    _note(job, {"id": str(dataset.id), "name": dataset.name})
    return dataset


def _note(job: Job, value: dict[str, str]) -> None:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        locked.result = {**(locked.result or {}), "scores_dataset": value}
        locked.save(update_fields=["result", "updated_at"])
