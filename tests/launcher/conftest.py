"""Local launcher fixtures: a fake runtime, a jobs folder per test, and one side of a ticket."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import transaction

from apps.datasets.models import Dataset
from apps.jobs.launchers.base import RuntimeSpec, RuntimeState
from apps.jobs.launchers.local import LocalLauncher, is_alive
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from apps.workspaces.models import Workspace

FAKE_RUNTIME = Path(__file__).with_name("fake_runtime.py")


@pytest.fixture
def runtime_env(settings, tmp_path):
    """Settings for launching the fake runtime locally; kills whatever a test left running."""
    settings.FEDSITE_JOBS_DIR = tmp_path / "jobs"
    settings.FEDSITE_RUNTIME_COMMAND = [sys.executable, str(FAKE_RUNTIME)]
    settings.FEDSITE_RUNTIME_ALLOW_INSECURE = True
    settings.FEDSITE_RUNTIME_HOST = "127.0.0.1"
    settings.FEDSITE_LAUNCHER = "local"
    settings.FEDSITE_LOCAL_STOP_GRACE_S = 2.0
    yield settings
    for pgid_file in (tmp_path / "jobs").rglob("fake.json"):
        import json

        info = json.loads(pgid_file.read_text())
        try:
            os.killpg(info["pgid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def launcher(runtime_env) -> LocalLauncher:
    return LocalLauncher()


def spec(job_id: str | None = None, *, role: str = "leader", fake: dict | None = None, **over) -> RuntimeSpec:
    job_id = job_id or str(uuid.uuid4())
    config = {
        "version": 1,
        "job_id": job_id,
        "role": role,
        "data": {"path": "/nonexistent.csv", "id_column": "id"},
        "steps": ["psi"],
        "psi": {"fake": fake or {}},
        "allow_insecure": True,
        **({"listen_address": "127.0.0.1:17999"} if role == "leader" else {"peer_address": "127.0.0.1:17999"}),
    }
    config.update(over)
    return RuntimeSpec(job_id=job_id, side=role, config=config, tls_files=None, port=17999, timeout_s=60)


def wait_finished(launcher, handle, timeout: float = 20.0) -> RuntimeState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = launcher.poll(handle)
        if state.finished:
            return state
        time.sleep(0.05)
    raise AssertionError(f"runtime {handle['pid']} still running after {timeout} s")


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    return not is_alive(pid, None)


@pytest.fixture
def side(db, tmp_path, settings):
    """make(role, fake=…, kind=…) → an approved ticket on this side and its first job (pending).

    The dataset's file lies in the workspace's own folder of a fresh data root.
    """
    settings.FEDSITE_DATA_ROOTS = [(tmp_path / "data").resolve()]

    def make(role: str = PartyRole.LEADER, *, fake: dict | None = None, kind: str = JobKind.PSI):
        ws = Workspace.objects.create(slug=f"ws-{uuid.uuid4().hex[:8]}", name="Acme")
        partner = Partner.objects.create(
            workspace=ws, name="beta", status=PartnerStatus.CONNECTED, endpoint="127.0.0.1:1"
        )
        folder = tmp_path / "data" / ws.slug
        folder.mkdir(parents=True)
        csv = folder / f"{ws.slug}.csv"
        csv.write_text("id,x,label\nu1,1,0\nu2,2,1\n")
        ds = Dataset.objects.create(
            workspace=ws,
            name="users",
            uri=str(csv.resolve()),
            format="csv",
            id_column="id",
            label_column="label" if role == PartyRole.LEADER else "",
            schema=[{"name": "id", "type": "string"}],
            row_count=2,
            checksum="0" * 64,
            size_bytes=csv.stat().st_size,
        )
        ticket = Ticket.objects.create(
            workspace=ws,
            partner=partner,
            name="t",
            kind=kind,
            role=role,
            is_proposer=role == PartyRole.LEADER,
            local_dataset=ds,
            params={"psi": {"fake": fake or {}}, "train": {}},
            status=TicketStatus.APPROVED,
        )
        from apps.jobs.services import start_ticket_run

        with transaction.atomic():
            job = start_ticket_run(ticket)
        return job

    return make
