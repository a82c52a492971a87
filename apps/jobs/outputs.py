"""A job's outputs on this side: listed, downloaded, registered as datasets.

Outputs are files the runtime wrote under this side's output folder (the launcher's
``output_dir``): a PSI step's aligned table and a score step's scores (the leader's
only). A name is looked up in a fixed table, never joined onto a path, so nothing
outside the job's folder is ever read. Registering copies the file (a hard link
when the filesystem allows) into the workspace's own data folder, then registers
it like any other dataset.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from apps.core.errors import NotFound, ServiceError
from apps.datasets.folders import ensure_workspace_folders
from apps.datasets.models import Dataset
from apps.jobs.models import Job


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
    path: Path
    size_bytes: int
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "description": self.description,
            "content_type": CONTENT_TYPE,
        }


def output_dir(job: Job) -> Path | None:
    """This side's runtime output folder, when this installation can read it.

    The local launcher's folder, or a Kubernetes runtime's folder on the outputs claim where the workers and
    the web mount it (FEDSITE_K8S_OUTPUT_PVC and FEDSITE_K8S_OUTPUT_MOUNT); elsewhere a job lists no outputs.
    """
    raw = (job.handle or {}).get("output_dir")
    return Path(raw) if raw else None


def job_outputs(job: Job) -> list[JobOutput]:
    """The outputs that exist on this side, in the table's order."""
    root = output_dir(job)
    if root is None:
        return []
    found: list[JobOutput] = []
    for name, spec in OUTPUTS.items():
        path = root / spec.relative
        try:
            if path.is_file() and not path.is_symlink():
                found.append(JobOutput(name, spec.kind, path, path.stat().st_size, spec.description))
        except OSError:
            continue
    return found


def get_output(job: Job, name: str) -> JobOutput:
    """One output of this side by name, else NotFound (an unknown name and a missing file read the same)."""
    for out in job_outputs(job):
        if out.name == name:
            return out
    known = ", ".join(o.name for o in job_outputs(job)) or "none yet"
    raise NotFound(f"job {job.id} has no output {name[:60]!r} on this side (outputs: {known})")


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        return [c.strip().strip('"') for c in f.readline().rstrip("\r\n").split(",")]


def _destination(job: Job, out: JobOutput) -> Path:
    folders = ensure_workspace_folders(job.workspace)
    if not folders:
        raise ServiceError("this workspace has no writable data folder to copy the output into", field="name")
    dest_dir = folders[0] / SUBFOLDER / str(job.id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    return dest_dir / f"{out.name}.csv"


def _copy(src: Path, dest: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy; atomic either way."""
    tmp = dest.parent / f".{dest.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
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
    columns = _header(out.path)
    if not id_column or id_column not in columns:
        id_column = columns[0] if columns and columns[0] else ""
    label = ticket.local_dataset.label_column if ticket.local_dataset else ""
    label = label if label and out.kind == "psi_aligned" and label in columns else ""
    dest = _destination(job, out)
    if not dest.exists() or dest.stat().st_size != out.size_bytes:
        _copy(out.path, dest)
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
    if job is None or not any(o.name == "scores" for o in job_outputs(job)):
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
