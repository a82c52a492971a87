"""Actions through the pages: allowed roles succeed via the services, others are refused and nothing changes."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.datasets.models import Dataset, DatasetGrant
from apps.jobs.models import Job
from apps.partners.models import Partner
from apps.peer.models import OutboxMessage
from apps.registry.models import ModelVersion
from apps.registry.services import apply_promotion_answer
from apps.tickets.choices import JobKind
from apps.tickets.models import Ticket

# -- refused: (who, url template, form) ---------------------------------------------
REFUSED = [
    ("bob", "/w/acme/datasets/new", {"name": "x", "uri": "labels.csv", "id_column": "user_id"}),
    ("dave", "/w/acme/tickets/{received}/approve", {"comment": "ok"}),
    ("bob", "/w/acme/tickets/{received}/reject", {"comment": "no"}),
    ("dave", "/w/acme/partners/{partner}/policies", {"psi": "always_allow"}),
    ("carol", "/w/acme/partners/{partner}/status", {"status": "suspended"}),
    ("carol", "/w/acme/datasets/{labels}/grant", {"partner": "{partner}"}),
    ("dave", "/w/acme/datasets/{features}/revoke", {"partner": "{partner}"}),
    ("bob", "/w/acme/jobs/{job}/cancel", {}),
    ("dave", "/w/acme/jobs/{job}/retry", {}),
    ("dave", "/w/acme/models/{mv}/stage", {"stage": "production"}),
    ("bob", "/w/acme/tickets/{sent}/withdraw", {}),
    ("dave", "/w/acme/partners/invite", {}),
    ("dave", "/w/acme/partners/accept", {"code": "fedsite-invite-v1.x"}),
]


def _fmt(text: str, w) -> str:
    ids = {k: v.pk for k, v in w.items() if hasattr(v, "pk")}
    return text.format(**ids)


def _snapshot():
    return (
        list(Ticket.objects.values_list("id", "status")),
        list(Job.objects.values_list("id", "status")),
        list(ModelVersion.objects.values_list("id", "stage")),
        list(Partner.objects.values_list("id", "status", "policies")),
        DatasetGrant.objects.count(),
        Dataset.objects.count(),
        AuditEvent.objects.count(),
    )


@pytest.mark.parametrize(("who", "url", "form"), REFUSED, ids=[f"{w}-{u.split('/')[-1]}" for w, u, _ in REFUSED])
def test_it_refuses_actions_above_the_role(world, browser_client, who, url, form):
    before = _snapshot()
    r = browser_client(who).post(_fmt(url, world), {k: _fmt(v, world) for k, v in form.items()})
    assert r.status_code == 403
    assert b"You can't do that here" in r.content
    assert _snapshot() == before


def test_charlie_cannot_act_in_acme(world, browser_client):
    before = _snapshot()
    r = browser_client("charlie").post(f"/w/acme/tickets/{world['received'].pk}/approve", {"comment": "x"})
    assert r.status_code == 404
    assert _snapshot() == before


def test_actions_are_not_offered_to_roles_that_cannot_take_them(world, browser_client):
    received = f"/w/acme/tickets/{world['received'].pk}/"
    assert b"Approve and start" in browser_client("carol").get(received).content
    body = browser_client("dave").get(received).content
    assert b"Approve and start" not in body and b"waits for an approver" in body
    assert b"Register a dataset" not in browser_client("bob").get("/w/acme/datasets/").content
    assert b"Register a dataset" in browser_client("dave").get("/w/acme/datasets/").content
    assert b"Create invitation code" in browser_client("erin").get("/w/acme/partners/").content
    assert b"Create invitation code" not in browser_client("carol").get("/w/acme/partners/").content
    assert b"Save policies" not in browser_client("carol").get(f"/w/acme/partners/{world['partner'].pk}/").content
    assert b"Cancel job" not in browser_client("bob").get(f"/w/acme/jobs/{world['job'].pk}/").content
    assert b"Cancel job" in browser_client("dave").get(f"/w/acme/jobs/{world['job'].pk}/").content
    assert b"Promote to production" not in browser_client("dave").get(f"/w/acme/models/{world['mv'].pk}/").content
    assert b"Promote to production" in browser_client("carol").get(f"/w/acme/models/{world['mv'].pk}/").content
    # The proposer cannot approve its own ticket, whatever its role.
    assert b"Approve and start" not in browser_client("alice").get(f"/w/acme/tickets/{world['sent'].pk}/").content


def test_approver_approves_a_received_ticket_with_a_comment(world, browser_client):
    client = browser_client("carol")
    r = client.post(f"/w/acme/tickets/{world['received'].pk}/approve", {"comment": "go ahead"})
    assert r.status_code == 302
    ticket = Ticket.objects.get(pk=world["received"].pk)
    assert ticket.status == "approved" and ticket.decision_comment == "go ahead"
    assert ticket.jobs.count() == 1
    page = client.get(r["Location"]).content.decode()
    assert "Approved. Both sides are starting the job." in page
    assert "go ahead" in page


def test_reject_needs_a_reason_and_shows_why(world, browser_client):
    client = browser_client("carol")
    r = client.post(f"/w/acme/tickets/{world['received'].pk}/reject", {"comment": ""}, follow=True)
    assert "say why you reject it" in r.content.decode()
    assert Ticket.objects.get(pk=world["received"].pk).status == "pending"
    client.post(f"/w/acme/tickets/{world['received'].pk}/reject", {"comment": "not this quarter"})
    assert Ticket.objects.get(pk=world["received"].pk).status == "rejected"


def test_illegal_move_is_a_message_not_an_error_page(world, browser_client):
    client = browser_client("carol")
    client.post(f"/w/acme/tickets/{world['received'].pk}/reject", {"comment": "no"})
    r = client.post(f"/w/acme/tickets/{world['received'].pk}/approve", {"comment": "changed my mind"}, follow=True)
    assert r.status_code == 200
    assert "cannot go from rejected to approved" in r.content.decode()


def test_member_withdraws_a_sent_ticket(world, browser_client):
    r = browser_client("dave").post(f"/w/acme/tickets/{world['sent'].pk}/withdraw", {"comment": "wrong data"})
    assert r.status_code == 302
    ticket = Ticket.objects.get(pk=world["sent"].pk)
    assert ticket.status == "withdrawn"
    assert ticket.events.last().comment == "wrong data"


def test_admin_sets_policies_and_suspends(world, browser_client):
    client = browser_client("erin")
    pk = world["partner"].pk
    policies = {
        "psi": "always_allow",
        "psi_vertical_nn": "manual",
        "vertical_nn": "always_refuse",
        "psi_vertical_tree": "always_allow",
        "vertical_tree": "manual",
    }
    policies |= {kind: "manual" for kind in JobKind.values if kind not in policies}  # kinds added since
    policies["model_promotion"] = "manual"  # the partner's promotions wait for an approver here
    client.post(f"/w/acme/partners/{pk}/policies", policies)
    partner = Partner.objects.get(pk=pk)
    assert partner.policies == policies
    client.post(f"/w/acme/partners/{pk}/status", {"status": "suspended"})
    assert Partner.objects.get(pk=pk).status == "suspended"
    client.post(f"/w/acme/partners/{pk}/status", {"status": "connected"})
    assert Partner.objects.get(pk=pk).status == "connected"


def test_admin_grants_and_revokes(world, browser_client):
    client = browser_client("erin")
    labels, partner = world["labels"], world["partner"]
    client.post(f"/w/acme/datasets/{labels.pk}/grant", {"partner": str(partner.pk)})
    assert DatasetGrant.objects.filter(dataset=labels, partner=partner).exists()
    client.post(f"/w/acme/datasets/{labels.pk}/revoke", {"partner": str(partner.pk)})
    assert not DatasetGrant.objects.filter(dataset=labels, partner=partner).exists()
    r = client.post(f"/w/acme/datasets/{labels.pk}/revoke", {"partner": "not-a-uuid"}, follow=True)
    assert "has no grant" in r.content.decode()


def test_member_cancels_a_running_job(world, browser_client):
    r = browser_client("dave").post(f"/w/acme/jobs/{world['job'].pk}/cancel", {}, follow=True)
    assert Job.objects.get(pk=world["job"].pk).status == "cancelled"
    assert "Cancelled." in r.content.decode()
    r = browser_client("dave").post(f"/w/acme/jobs/{world['job'].pk}/cancel", {}, follow=True)
    assert "already cancelled" in r.content.decode()


def test_only_approvers_are_offered_retry(world, browser_client):
    Job.objects.filter(pk=world["done"].pk).update(status="failed")
    url = f"/w/acme/jobs/{world['done'].pk}/"
    assert b">Retry</button>" not in browser_client("dave").get(url).content
    assert b">Retry</button>" in browser_client("carol").get(url).content


def test_approver_retries_a_failed_job(world, browser_client):
    client = browser_client("carol")
    # The newest attempt (2) succeeded; fail it so it can be retried.
    Job.objects.filter(pk=world["done"].pk).update(status="failed")
    r = client.post(f"/w/acme/jobs/{world['done'].pk}/retry", {})
    assert r.status_code == 302
    new = Job.objects.filter(ticket=world["sent"]).order_by("-attempt").first()
    assert new.attempt == 3 and r["Location"] == f"/w/acme/jobs/{new.pk}/"


def test_approver_promotes_and_archives(world, browser_client):
    client = browser_client("carol")
    mv = world["mv"]
    r = client.post(f"/w/acme/models/{mv.pk}/stage", {"stage": "production"}, follow=True)
    # Promotion asks the partner first: pending until it answers.
    assert ModelVersion.objects.get(pk=mv.pk).stage == "candidate"
    assert "Promotion pending at partner" in r.content.decode()
    assert "Promote to production" not in r.content.decode()
    apply_promotion_answer(mv.workspace, mv.ticket.partner, {"model_version_id": str(mv.pk)}, accepted=True)
    assert ModelVersion.objects.get(pk=mv.pk).stage == "production"
    client.post(f"/w/acme/models/{mv.pk}/stage", {"stage": "archived"})
    assert ModelVersion.objects.get(pk=mv.pk).stage == "archived"
    r = client.post(f"/w/acme/models/{mv.pk}/stage", {"stage": "production"}, follow=True)
    assert "archived model version cannot be promoted" in r.content.decode()
    # Leaving production told the partner (model.demote).
    assert OutboxMessage.objects.filter(kind="model.demote").count() == 1


def test_approver_decides_a_promotion_the_partner_asked_for(world, browser_client):
    from apps.partners.services import set_policies
    from apps.registry.services import receive_promotion_request

    mv = world["mv"]
    set_policies(mv.ticket.partner, {"model_promotion": "manual"})
    receive_promotion_request(mv.workspace, mv.ticket.partner, {"model_version_id": str(mv.pk)})
    client = browser_client("carol")
    page = client.get(f"/w/acme/models/{mv.pk}/").content.decode()
    assert "data-promotion-awaiting" in page and "Approve promotion" in page
    r = client.post(f"/w/acme/models/{mv.pk}/promotion", {"decision": "refuse", "reason": "later"}, follow=True)
    assert "promotion of" in r.content.decode() and ModelVersion.objects.get(pk=mv.pk).stage == "candidate"
    [refusal] = OutboxMessage.objects.filter(kind="model.promotion_refused")
    assert refusal.payload["reason"].endswith("(carol): later")


def test_admin_creates_an_invitation_code(world, browser_client):
    r = browser_client("erin").post("/w/acme/partners/invite", {})
    assert r.status_code == 200
    body = r.content.decode()
    assert "fedsite-invite-v1." in body and 'data-copy="#invitation-code"' in body


def test_a_damaged_invitation_code_is_shown_in_the_form(world, browser_client):
    r = browser_client("erin").post("/w/acme/partners/accept", {"code": "hello", "name": ""})
    assert r.status_code == 400
    assert "not a Fedsite invitation code" in r.content.decode()
