"""Ticket negotiation at the service and API level (one installation's view)."""

from __future__ import annotations

import uuid

import pytest

from apps.datasets.models import DatasetGrant
from apps.datasets.services import register_dataset
from apps.jobs.models import Job
from apps.partners.choices import Policy
from apps.peer.models import OutboxMessage
from apps.tickets.choices import JobKind, PartyRole, TicketStatus
from apps.tickets.models import Ticket
from apps.tickets.params import TRAIN_DEFAULTS
from apps.tickets.services import receive_proposal
from tests.foundation.factories import connected_partner, features_csv, labelled_csv, shared_dataset

pytestmark = pytest.mark.django_db
TICKETS = "/api/v1/workspaces/acme/tickets/"


@pytest.fixture
def setup(workspaces, users, data_root):
    acme = workspaces["acme"]
    partner = connected_partner(acme)
    labels = register_dataset(
        acme, name="labels", uri=str(labelled_csv(data_root)), id_column="id", label_column="label"
    )
    features = register_dataset(acme, name="features", uri=str(features_csv(data_root)), id_column="id")
    remote = shared_dataset(partner)
    return {"acme": acme, "partner": partner, "labels": labels, "features": features, "remote": remote}


def propose(api, setup, who="dave", **over):
    body = {
        "partner": str(setup["partner"].id),
        "kind": JobKind.PSI_VERTICAL_NN,
        "local_dataset": str(setup["labels"].id),
        "remote_dataset": str(setup["remote"].id),
        "comment": "let's train",
    }
    body.update(over)
    return api(who).post(TICKETS, body, format="json")


def proposal_payload(setup, dataset_id, kind=JobKind.PSI_VERTICAL_NN):
    return {
        "ticket_id": str(uuid.uuid4()),
        "name": "their proposal",
        "kind": kind,
        "proposer_role": PartyRole.LEADER,
        "proposer_dataset": {"id": str(uuid.uuid4()), "name": "their_labels"},
        "receiver_dataset_id": str(dataset_id),
        "params": {},
    }


def test_proposing_queues_a_message_and_leads_with_labels(api, setup):
    r = propose(api, setup)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == TicketStatus.PROPOSED and body["role"] == PartyRole.LEADER and body["is_proposer"]
    assert body["params"]["train"] == TRAIN_DEFAULTS and body["params"]["psi"]["protocol"] == "auto"
    message = OutboxMessage.objects.get(kind="ticket.proposed")
    assert message.payload["ticket_id"] == body["id"]
    assert message.payload["receiver_dataset_id"] == str(setup["remote"].remote_id)
    assert [e["to_status"] for e in body["events"]] == [TicketStatus.PROPOSED]


def test_the_side_without_labels_follows(api, setup):
    setup["remote"].has_label = True
    setup["remote"].save()
    r = propose(api, setup, local_dataset=str(setup["features"].id))
    assert r.status_code == 201 and r.json()["role"] == PartyRole.FOLLOWER


def test_training_needs_labels_on_exactly_one_side(api, setup):
    r = propose(api, setup, local_dataset=str(setup["features"].id))
    assert r.status_code == 400 and "neither dataset has a label" in str(r.json())
    assert not Ticket.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"train": {"epochs": 0}}, "params.train.epochs", "from 1 to 1000"),
        ({"train": {"optimizer": "rmsprop"}}, "params.train.optimizer", "adam"),
        ({"train": {"bottom_layers": []}}, "params.train.bottom_layers", "1 to 8"),
        ({"train": {"dropout": 0.5}}, "params.train", "unknown keys: dropout"),
        ({"psi": {"protocol": "md5"}}, "params.psi.protocol", "ecdh"),
        ({"magic": 1}, "params", "unknown keys: magic"),
    ],
)
def test_bad_params_are_named_and_nothing_is_created(api, setup, params, field, message):
    r = propose(api, setup, params=params)
    assert r.status_code == 400
    assert message in r.json()[field][0]
    assert not Ticket.objects.exists()


def test_a_dataset_another_partner_shared_is_refused(api, setup):
    other = connected_partner(setup["acme"], name="other")
    r = propose(api, setup, remote_dataset=str(shared_dataset(other).id))
    assert r.status_code == 400 and "unknown remote dataset" in r.json()["remote_dataset"][0]


def test_a_suspended_partner_gets_no_proposals(api, setup):
    setup["partner"].status = "suspended"
    setup["partner"].save()
    r = propose(api, setup)
    assert r.status_code == 400 and "suspended" in r.json()["partner"][0]


def test_a_received_proposal_waits_for_a_manual_decision(setup):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    assert ticket.status == TicketStatus.PENDING and ticket.role == PartyRole.FOLLOWER and not ticket.is_proposer
    assert not OutboxMessage.objects.exists()


def test_receiving_the_same_proposal_twice_applies_it_once(setup):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    payload = proposal_payload(setup, setup["features"].id)
    first = receive_proposal(setup["acme"], setup["partner"], payload)
    second = receive_proposal(setup["acme"], setup["partner"], payload)
    assert first.pk == second.pk and Ticket.objects.count() == 1


def test_a_proposal_on_a_dataset_never_granted_is_refused(setup):
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    assert ticket.status == TicketStatus.REJECTED
    assert "never granted" in ticket.decision_comment
    assert OutboxMessage.objects.get().kind == "ticket.rejected"


@pytest.mark.parametrize(
    ("policy", "status", "jobs"),
    [
        (Policy.ALWAYS_ALLOW, TicketStatus.APPROVED, 1),
        (Policy.ALWAYS_REFUSE, TicketStatus.REJECTED, 0),
        (Policy.MANUAL, TicketStatus.PENDING, 0),
    ],
)
def test_the_partner_policy_decides_on_receipt(setup, policy, status, jobs):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    setup["partner"].policies = {JobKind.PSI_VERTICAL_NN: policy}
    setup["partner"].save()
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    assert ticket.status == status
    assert Job.objects.filter(ticket=ticket).count() == jobs


def test_an_approver_approves_and_a_job_is_created(api, setup):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    r = api("carol").post(f"{TICKETS}{ticket.id}/approve/", {"comment": "fine by us"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["status"] == TicketStatus.APPROVED and r.json()["decision_comment"] == "fine by us"
    job = Job.objects.get(ticket=ticket)
    assert job.role == PartyRole.FOLLOWER and job.status == "pending"
    assert OutboxMessage.objects.get(kind="ticket.approved").payload["dataset"]["id"] == str(setup["features"].id)
    again = api("carol").post(f"{TICKETS}{ticket.id}/approve/", {}, format="json")
    assert again.status_code == 409 and "cannot go from approved to approved" in again.json()["detail"]


def test_the_proposer_cannot_approve_its_own_ticket(api, setup):
    ticket_id = propose(api, setup).json()["id"]
    r = api("carol").post(f"{TICKETS}{ticket_id}/approve/", {}, format="json")
    assert r.status_code == 403 and "you proposed it" in r.json()["detail"]


def test_rejecting_needs_a_reason(api, setup):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    assert api("carol").post(f"{TICKETS}{ticket.id}/reject/", {}, format="json").status_code == 400
    r = api("carol").post(f"{TICKETS}{ticket.id}/reject/", {"reason": "not this quarter"}, format="json")
    assert r.json()["status"] == TicketStatus.REJECTED


def test_only_the_proposer_withdraws(api, setup):
    ticket_id = propose(api, setup).json()["id"]
    r = api("dave").post(f"{TICKETS}{ticket_id}/withdraw/", {"reason": "changed plans"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == TicketStatus.WITHDRAWN
    assert OutboxMessage.objects.filter(kind="ticket.withdrawn").count() == 1
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    theirs = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    r = api("dave").post(f"{TICKETS}{theirs.id}/withdraw/", {}, format="json")
    assert r.status_code == 403


def test_runtime_reports_need_the_job_token(api, setup, client):
    from apps.jobs.services import issue_runtime_token

    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    ticket = receive_proposal(setup["acme"], setup["partner"], proposal_payload(setup, setup["features"].id))
    api("carol").post(f"{TICKETS}{ticket.id}/approve/", {}, format="json")
    job = Job.objects.get(ticket=ticket)
    Job.objects.filter(pk=job.pk).update(status="starting")
    token = issue_runtime_token(job)
    url = f"/api/v1/runtime/jobs/{job.id}/report"
    events = {
        "events": [
            {"type": "progress", "value": 0.25, "stage": "psi"},
            {"type": "metric", "name": "auc", "value": 0.8, "epoch": 1, "split": "validation"},
            {"type": "log", "line": "hello"},
        ]
    }
    assert client.post(url, events, content_type="application/json").status_code == 401
    assert (
        client.post(url, events, content_type="application/json", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    )
    # a user's API token is not a job token
    assert client.post(url, events, content_type="application/json", HTTP_AUTHORIZATION="Token x").status_code == 401
    r = client.post(url, events, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 202, r.content
    job.refresh_from_db()
    assert (job.status, job.progress, job.stage, job.log_tail) == ("running", 0.25, "psi", "hello")
    assert job.metrics.get().value == 0.8
    bad = client.post(
        url, {"events": [{"type": "metric"}]}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert bad.status_code == 400 and "metric needs name and value" in str(bad.json())
    bad = client.post(
        url, {"events": [{"type": "failed"}]}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert bad.status_code == 400 and "failed needs error" in str(bad.json())
    job.refresh_from_db()
    assert job.status == "running"
    r = client.post(
        url,
        {"events": [{"type": "failed", "error": "error: data.path: no such file x.csv"}]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert r.status_code == 202, r.content
    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", "error: data.path: no such file x.csv")


def test_a_tree_ticket_gets_the_tree_defaults_and_the_partner_receives_its_kind(api, setup):
    r = propose(api, setup, kind=JobKind.PSI_VERTICAL_TREE, params={"tree": {"max_depth": 3, "he_scheme": "paillier"}})
    assert r.status_code == 201, r.content
    params = r.json()["params"]
    assert params["psi"]["protocol"] == "auto" and "train" not in params
    assert params["tree"] == {
        "num_trees": 100,
        "max_depth": 3,
        "learning_rate": 0.1,
        "max_bin": 32,
        "min_child_weight": 1.0,
        "reg_lambda": 1.0,
        "gamma": 0.0,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "validation_fraction": 0.2,
        "early_stopping_rounds": 10,
        "seed": 42,
        "objective": "binary:logistic",
        "he_scheme": "paillier",
        "key_bits": 2048,
    }
    message = OutboxMessage.objects.get(kind="ticket.proposed")
    assert message.payload["kind"] == JobKind.PSI_VERTICAL_TREE
    assert message.payload["params"]["tree"]["max_depth"] == 3


def test_a_received_tree_proposal_is_applied(setup):
    DatasetGrant.objects.create(dataset=setup["features"], partner=setup["partner"])
    payload = proposal_payload(setup, setup["features"].id, kind=JobKind.VERTICAL_TREE)
    ticket = receive_proposal(setup["acme"], setup["partner"], payload)
    assert ticket.kind == JobKind.VERTICAL_TREE and ticket.role == PartyRole.FOLLOWER
    assert ticket.params["tree"]["num_trees"] == 100 and ticket.status == TicketStatus.PENDING


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"tree": {"max_depth": 0}}, "params.tree.max_depth", "from 1 to 10"),
        ({"tree": {"he_scheme": "rsa"}}, "params.tree.he_scheme", "ou, paillier"),
        ({"tree": {"key_bits": 512}}, "params.tree.key_bits", "1024, 2048"),
        ({"tree": {"objective": "multi:softmax"}}, "params.tree.objective", "binary:logistic"),
        ({"tree": {"subsample": 0}}, "params.tree.subsample", "from 0.01 to 1.0"),
        ({"tree": {"depth": 3}}, "params.tree", "unknown keys: depth"),
    ],
)
def test_bad_tree_params_are_named_and_nothing_is_created(api, setup, params, field, message):
    r = propose(api, setup, kind=JobKind.VERTICAL_TREE, params=params)
    assert r.status_code == 400
    assert message in r.json()[field][0]
    assert not Ticket.objects.exists()
