"""Two-party promotion between two live installations: both halves turn production together, or neither does."""

from __future__ import annotations

import uuid

import pytest

from tests.live import Side

pytestmark = pytest.mark.peer

# Both halves of a model version share one id; these are made directly (no training) on each side.
MAKE = """
from apps.jobs.models import Job
from apps.partners.models import Partner
from apps.registry.models import ModelVersion
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from apps.workspaces.models import Workspace
ws = Workspace.objects.get(slug="{slug}")
partner = Partner.objects.get(workspace=ws)
ticket = Ticket.objects.create(id="{ticket}", workspace=ws, partner=partner, name="t", kind=JobKind.PSI,
    role=PartyRole.{role}, is_proposer={proposer}, status=TicketStatus.APPROVED)
job = Job.objects.create(workspace=ws, ticket=ticket, role=PartyRole.{role})
ModelVersion.objects.create(id="{mv}", workspace=ws, ticket=ticket, job=job, name="m", role=PartyRole.{role},
    artifact_uri="/nonexistent")
"""


def both_halves(alpha: Side, beta: Side) -> str:
    ticket, mv = uuid.uuid4(), uuid.uuid4()
    for side, role, proposer in ((alpha, "LEADER", True), (beta, "FOLLOWER", False)):
        code = MAKE.format(slug=side.slug, ticket=ticket, mv=mv, role=role, proposer=proposer)
        side.inst.manage("shell", "-c", code)
    return str(mv)


def test_promoting_on_one_side_promotes_both(alpha, beta, partnership):
    mv = both_halves(alpha, beta)
    resp = alpha.api.request("POST", alpha.path(f"model-versions/{mv}/promote/"))
    assert resp.status_code == 202, resp.text
    assert resp.json()["promotion"] in ("requested", "")  # pending, unless the partner answered already
    again = alpha.api.request("POST", alpha.path(f"model-versions/{mv}/promote/"))
    assert again.status_code == 202  # idempotent while pending
    beta.wait(f"model-versions/{mv}/", lambda m: m["stage"] == "production")
    done = alpha.wait(f"model-versions/{mv}/", lambda m: m["stage"] == "production")
    assert done["promotion"] == ""
    assert len([e for e in alpha.audit("model_version.promotion_requested") if e["object_id"] == mv]) == 1
    assert len([e for e in beta.audit("model_version.production") if e["object_id"] == mv]) == 1


def test_an_archived_partner_half_refuses_and_nothing_changes(alpha, beta, partnership):
    mv = both_halves(alpha, beta)
    beta.post(f"model-versions/{mv}/archive/")
    alpha.post(f"model-versions/{mv}/promote/")
    refused = alpha.wait(f"model-versions/{mv}/", lambda m: m["promotion"] == "refused")
    assert refused["stage"] == "candidate" and "archived" in refused["promotion_reason"]
    assert beta.get(f"model-versions/{mv}/")["stage"] == "archived"
