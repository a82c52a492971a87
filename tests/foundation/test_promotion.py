"""Two-party promotion and demotion, service level: request, the partner's handling under its approval policy,
the answer (each applied once); leaving production on both sides with serving stopped."""

import pytest

from apps.core.errors import ServiceError
from apps.jobs.choices import JobStatus
from apps.jobs.models import Job
from apps.partners.choices import PROMOTION_POLICY, Policy
from apps.partners.services import set_policies
from apps.peer.models import OutboxMessage
from apps.registry.choices import Promotion, Stage
from apps.registry.models import ModelVersion
from apps.registry.services import (
    apply_promotion_answer,
    decide_promotion,
    receive_demotion,
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


# Two-party demotion ------------------------------------------------------------------------------------------------


def serve_job(acme, partner, mv, status=JobStatus.RUNNING):
    ticket = Ticket.objects.create(
        workspace=acme,
        partner=partner,
        name="serve",
        kind=JobKind.SERVE,
        role=PartyRole.LEADER,
        is_proposer=True,
        status=TicketStatus.RUNNING,
        params={"serve": {"model_version": str(mv.id)}},
    )
    return Job.objects.create(workspace=acme, ticket=ticket, role=PartyRole.LEADER, status=status)


def test_archiving_a_production_version_demotes_the_partner_and_stops_serving(side):
    acme, partner, mv = side
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    job = serve_job(acme, partner, mv)
    with transaction_atomic():
        set_stage(mv, Stage.ARCHIVED, reason="drift")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and "left production" in job.error
    assert sent("model.demote") == [{"model_version_id": str(mv.id), "stage": "archived", "reason": "drift"}]
    assert acme.audit_events.filter(verb="model_version.demotion_sent").count() == 1


def test_archiving_a_candidate_sends_nothing(side):
    _, _, mv = side
    with transaction_atomic():
        set_stage(mv, Stage.ARCHIVED)
    assert sent("model.demote") == []


def test_the_partner_demotion_archives_our_half_once_and_stops_serving(side):
    acme, partner, mv = side
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    job = serve_job(acme, partner, mv)
    payload = {"model_version_id": str(mv.id), "stage": "archived", "reason": "drift"}
    receive_demotion(acme, partner, payload)
    receive_demotion(acme, partner, payload)  # a repeat changes nothing
    mv.refresh_from_db()
    job.refresh_from_db()
    assert mv.stage == Stage.ARCHIVED and mv.promotion_reason == f"archived by {partner.name}: drift"
    assert job.status == JobStatus.CANCELLED
    assert acme.audit_events.filter(verb="model_version.archived").count() == 1
    assert sent("model.demote") == []  # nothing is sent back


def test_a_demotion_of_an_unknown_version_is_ignored_and_a_bad_one_refused(side):
    acme, partner, _ = side
    receive_demotion(acme, partner, {"model_version_id": "00000000-0000-0000-0000-000000000001"})
    with pytest.raises(ServiceError, match="model_version_id"):
        receive_demotion(acme, partner, {"model_version_id": "nope"})


def test_a_demotion_withdraws_a_pending_promotion(side):
    acme, partner, mv = side
    request_promotion(mv)
    receive_demotion(acme, partner, {"model_version_id": str(mv.id)})
    mv.refresh_from_db()
    assert (mv.stage, mv.promotion) == (Stage.CANDIDATE, Promotion.NONE)


# The partner's approval policy for promotions ---------------------------------------------------------------------


def test_a_manual_policy_holds_the_request_for_an_approver(side, users):
    acme, partner, mv = side
    set_policies(partner, {PROMOTION_POLICY: Policy.MANUAL})
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})  # a repeat changes nothing
    mv.refresh_from_db()
    assert (mv.stage, mv.promotion) == (Stage.CANDIDATE, Promotion.AWAITING)
    assert sent("model.promoted") == [] and sent("model.promotion_refused") == []
    mv = decide_promotion(mv, approve=True, acting_user=users["alice"])
    assert (mv.stage, mv.promotion) == (Stage.PRODUCTION, Promotion.NONE)
    assert sent("model.promoted") == [{"model_version_id": str(mv.id)}]
    with pytest.raises(ServiceError, match="has not asked"):
        decide_promotion(mv, approve=True)


def test_an_approver_refuses_with_a_reason_the_partner_sees(side, users):
    acme, partner, mv = side
    set_policies(partner, {PROMOTION_POLICY: Policy.MANUAL})
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    mv = decide_promotion(mv, approve=False, reason="not validated yet", acting_user=users["alice"])
    assert (mv.stage, mv.promotion) == (Stage.CANDIDATE, Promotion.NONE)
    [refusal] = sent("model.promotion_refused")
    assert refusal["reason"] == "refused by an approver at Acme Ads (alice): not validated yet"


def test_an_always_refuse_policy_refuses_at_once(side):
    acme, partner, mv = side
    set_policies(partner, {PROMOTION_POLICY: Policy.ALWAYS_REFUSE})
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    mv.refresh_from_db()
    assert mv.stage == Stage.CANDIDATE
    assert [p["reason"] for p in sent("model.promotion_refused")] == ["refused by policy at Acme Ads (always_refuse)"]


def test_our_own_request_is_our_consent_and_promoting_an_awaiting_version_approves_it(side):
    acme, partner, mv = side
    set_policies(partner, {PROMOTION_POLICY: Policy.MANUAL})
    request_promotion(mv)  # both sides asked at once: the partner's request finds ours
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    mv.refresh_from_db()
    assert mv.stage == Stage.PRODUCTION
    with transaction_atomic():
        set_stage(mv, Stage.ARCHIVED)
        set_stage(mv, Stage.CANDIDATE)
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    mv = request_promotion(mv)  # the approver here promotes what the partner asked for
    assert mv.stage == Stage.PRODUCTION


def test_the_api_decides_a_held_promotion_for_approvers_only(side, api):
    acme, partner, mv = side
    set_policies(partner, {PROMOTION_POLICY: Policy.MANUAL})
    receive_promotion_request(acme, partner, {"model_version_id": str(mv.id)})
    url = f"/api/v1/workspaces/acme/model-versions/{mv.id}/"
    assert api("alice").get(url).json()["promotion"] == "awaiting"
    assert api("dave").post(url + "refuse-promotion/", {"reason": "x"}, format="json").status_code == 403
    response = api("alice").post(url + "refuse-promotion/", {"reason": "x" * 300}, format="json")
    assert response.status_code == 400 and "reason" in str(response.json())
    assert api("alice").post(url + "approve-promotion/").json()["stage"] == "production"
    assert api("alice").post(url + "approve-promotion/").status_code == 400
