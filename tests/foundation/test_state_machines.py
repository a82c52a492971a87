"""Every transition of the ticket, job and model-version tables, legal and illegal."""

from __future__ import annotations

import itertools

import pytest
from django.db import transaction

from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, IllegalTransition
from apps.core.statemachine import transition
from apps.jobs.choices import JOB_MACHINE, JobStatus
from apps.jobs.models import Job
from apps.registry.choices import STAGE_MACHINE, Stage
from apps.registry.models import ModelVersion
from apps.tickets.choices import TICKET_MACHINE, JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from tests.foundation.factories import connected_partner

pytestmark = pytest.mark.django_db

TICKET_PAIRS = list(itertools.product(TicketStatus.values, repeat=2))
JOB_PAIRS = list(itertools.product(JobStatus.values, repeat=2))
STAGE_PAIRS = list(itertools.product(Stage.values, repeat=2))


@pytest.fixture
def ticket(workspaces):
    partner = connected_partner(workspaces["acme"])
    return Ticket.objects.create(
        workspace=workspaces["acme"],
        partner=partner,
        name="t",
        kind=JobKind.PSI,
        role=PartyRole.LEADER,
        is_proposer=True,
    )


def attempt(obj, sm, target, field="status"):
    with transaction.atomic():
        transition(obj, sm, target, field=field)


@pytest.mark.parametrize(("start", "target"), TICKET_PAIRS)
def test_ticket_transitions_follow_the_table(ticket, start, target):
    Ticket.objects.filter(pk=ticket.pk).update(status=start)
    ticket.refresh_from_db()
    if TICKET_MACHINE.can(start, target):
        attempt(ticket, TICKET_MACHINE, target)
        ticket.refresh_from_db()
        assert ticket.status == target
    else:
        with pytest.raises(IllegalTransition, match=f"cannot go from {start} to {target}"):
            attempt(ticket, TICKET_MACHINE, target)
        ticket.refresh_from_db()
        assert ticket.status == start


@pytest.mark.parametrize(("start", "target"), JOB_PAIRS)
def test_job_transitions_follow_the_table(ticket, start, target):
    job = Job.objects.create(workspace=ticket.workspace, ticket=ticket, role=PartyRole.LEADER, status=start)
    if JOB_MACHINE.can(start, target):
        attempt(job, JOB_MACHINE, target)
        job.refresh_from_db()
        assert job.status == target
    else:
        with pytest.raises(IllegalTransition):
            attempt(job, JOB_MACHINE, target)
        job.refresh_from_db()
        assert job.status == start


@pytest.mark.parametrize(("start", "target"), STAGE_PAIRS)
def test_model_stage_transitions_follow_the_table(ticket, start, target):
    job = Job.objects.create(workspace=ticket.workspace, ticket=ticket, role=PartyRole.LEADER)
    mv = ModelVersion.objects.create(
        workspace=ticket.workspace,
        ticket=ticket,
        job=job,
        name="m",
        role=PartyRole.LEADER,
        artifact_uri="/x",
        stage=start,
    )
    if STAGE_MACHINE.can(start, target):
        attempt(mv, STAGE_MACHINE, target, field="stage")
        mv.refresh_from_db()
        assert mv.stage == target
    else:
        with pytest.raises(IllegalTransition):
            attempt(mv, STAGE_MACHINE, target, field="stage")


def test_terminal_states_are_final():
    assert TICKET_MACHINE.terminal == {
        TicketStatus.SUCCEEDED,
        TicketStatus.REJECTED,
        TicketStatus.WITHDRAWN,
        TicketStatus.EXPIRED,
    }
    assert JOB_MACHINE.terminal == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def test_a_stale_copy_loses_the_compare_and_set(ticket):
    # given two copies of the same proposed ticket
    Ticket.objects.filter(pk=ticket.pk).update(status=TicketStatus.PROPOSED)
    first, second = Ticket.objects.get(pk=ticket.pk), Ticket.objects.get(pk=ticket.pk)
    # when one approves and the other, stale, rejects
    attempt(first, TICKET_MACHINE, TicketStatus.APPROVED)
    with pytest.raises(Conflict, match="changed to approved"):
        attempt(second, TICKET_MACHINE, TicketStatus.REJECTED)
    # then the first write stands
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.APPROVED


@pytest.mark.django_db(transaction=True)
def test_transition_outside_a_transaction_is_refused(ticket):
    with pytest.raises(AssertionError, match="needs transaction.atomic"):
        transition(ticket, TICKET_MACHINE, TicketStatus.PROPOSED)


def test_audit_events_are_append_only(ticket):
    event = AuditEvent.objects.create(workspace=ticket.workspace, source="system", verb="x")
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
