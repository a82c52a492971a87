"""A worker killed mid-delivery does not hold its partner's messages until its lease runs out."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys

import pytest
from django.utils import timezone

from apps.core.processes import is_gone, this_process
from apps.partners.choices import PartnerStatus
from apps.partners.models import Partner
from apps.peer.delivery import _Lease
from apps.workspaces.models import Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def partner(db) -> Partner:
    ws = Workspace.objects.create(slug="acme", name="Acme")
    return Partner.objects.create(workspace=ws, name="beta", status=PartnerStatus.CONNECTED, endpoint="127.0.0.1:1")


def a_killed_worker() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:1"


def hold(partner: Partner, holder: str) -> None:
    Partner.objects.filter(pk=partner.pk).update(
        delivery_lease_until=timezone.now() + dt.timedelta(seconds=30), delivery_lease_holder=holder
    )


def test_the_lease_of_a_killed_worker_is_taken_over_at_once(partner):
    hold(partner, a_killed_worker())
    lease = _Lease.acquire(partner.pk)
    assert lease is not None
    assert Partner.objects.get(pk=partner.pk).delivery_lease_holder == this_process()
    lease.release()
    assert Partner.objects.get(pk=partner.pk).delivery_lease_until is None


def test_a_live_workers_lease_is_respected(partner):
    hold(partner, this_process())  # another thread of this very worker
    assert _Lease.acquire(partner.pk) is None


def test_another_machines_lease_runs_out_before_it_is_taken(partner):
    hold(partner, "elsewhere.example:4242:17")
    assert not is_gone("elsewhere.example:4242:17")
    assert _Lease.acquire(partner.pk) is None
    Partner.objects.filter(pk=partner.pk).update(delivery_lease_until=timezone.now() - dt.timedelta(seconds=1))
    assert _Lease.acquire(partner.pk) is not None
