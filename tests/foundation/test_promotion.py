"""Two-party promotion, service level: request, the partner's handling, the answer (each applied once)."""

import pytest

from apps.jobs.models import Job
from apps.peer.models import OutboxMessage
from apps.registry.choices import Promotion, Stage
from apps.registry.models import ModelVersion
from apps.registry.services import (
    apply_promotion_answer,
    receive_promotion_request,
    request_promotion,
    set_stage,
)
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from tests.foundation.factories import connected_partner

pytestmark = pytest.mark.django_db


@pytest.fixture
def side(workspaces):
    acme = workspaces["acme"]
    partner = connected_partner(acme)
    ticket = Ticket.objects.create(
        workspace=acme,
        partner=partner,
        name="t",
        kind=JobKind.PSI,
        role=PartyRole.LEADER,
        is_proposer=True,
        status=TicketStatus.APPROVED,
    )
    job = Job.objects.create(workspace=acme, ticket=ticket, role=PartyRole.LEADER)
    mv = ModelVersion.objects.create(
        workspace=acme, ticket=ticket, job=job, name="mv", role=PartyRole.LEADER, artifact_uri="/tmp/m"
    )
    return acme, partner, mv


def sent(kind):
    return list(OutboxMessage.objects.filter(kind=kind).values_list("payload", flat=True))


def test_a_request_is_pending_and_asked_once(side):
    _, _, mv = side
    mv = request_promotion(mv)
    assert (mv.stage, mv.promotion) == (Stage.CANDIDATE, Promotion.REQUESTED)
    request_promotion(mv)  # idempotent while pending
    assert sent("model.promote") == [{"model_version_id": str(mv.id)}]


def test_the_partner_promotes_a_valid_half_and_answers(side):
    acme, partner, mv = side
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    mv.refresh_from_db()
    assert mv.stage == Stage.PRODUCTION and sent("model.promoted") == [{"model_version_id": str(mv.id)}]
    assert acme.audit_events.filter(verb="model_version.production").count() == 1


def test_the_partner_refuses_an_archived_or_unknown_half(side):
    acme, partner, mv = side
    with transaction_atomic():
        set_stage(mv, Stage.ARCHIVED)
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    unknown = "00000000-0000-0000-0000-000000000001"
    receive_promotion_request(acme, partner, {"model_version_id": unknown})
    mv.refresh_from_db()
    assert mv.stage == Stage.ARCHIVED
    reasons = [p["reason"] for p in sent("model.promotion_refused")]
    assert reasons == ["the partner's half is archived", "the partner holds no such model version with us"]


def test_an_acceptance_promotes_once(side):
    acme, partner, mv = side
    request_promotion(mv)
    apply_promotion_answer(acme, partner, {"model_version_id": str(mv.id)}, accepted=True)
    apply_promotion_answer(acme, partner, {"model_version_id": str(mv.id)}, accepted=True)  # a late duplicate
    mv.refresh_from_db()
    assert (mv.stage, mv.promotion) == (Stage.PRODUCTION, Promotion.NONE)
    assert acme.audit_events.filter(verb="model_version.production").count() == 1


def test_a_refusal_keeps_the_stage_and_shows_the_reason(side):
    acme, partner, mv = side
    request_promotion(mv)
    apply_promotion_answer(acme, partner, {"model_version_id": str(mv.id), "reason": "archived"}, accepted=False)
    mv.refresh_from_db()
    assert (mv.stage, mv.promotion, mv.promotion_reason) == (Stage.CANDIDATE, Promotion.REFUSED, "archived")


def test_archiving_while_pending_clears_the_request(side):
    acme, partner, mv = side
    request_promotion(mv)
    with transaction_atomic():
        set_stage(mv, Stage.ARCHIVED)
    apply_promotion_answer(acme, partner, {"model_version_id": str(mv.id)}, accepted=True)
    mv.refresh_from_db()
    assert (mv.stage, mv.promotion) == (Stage.ARCHIVED, Promotion.NONE)
    with pytest.raises(Exception, match="archived"):
        request_promotion(mv)


def transaction_atomic():
    from django.db import transaction

    return transaction.atomic()
