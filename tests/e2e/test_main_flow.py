"""The main flow of DESIGN.md across two live installations, exactly as `make demo` runs it.

In CI both installations use PostgreSQL (DATABASE_URL names the server) and
Redis (FEDSITE_TEST_BROKER_URL); elsewhere SQLite and the filesystem broker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from demo.flow import run_main_flow, running_pair
from tests.schema_client import validating_clients

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ROWS = 20_000  # per side; 75% overlap
A, B = "/api/v1/workspaces/alpha", "/api/v1/workspaces/beta"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_pair(
        tmp_path_factory.mktemp("e2e"),
        database_url=os.environ.get("DATABASE_URL") or None,
        broker_url=os.environ.get("FEDSITE_TEST_BROKER_URL"),
        db_prefix=f"fedsite_e2e_{os.getpid()}",
        rows=ROWS,
    ) as pair:
        yield pair


@pytest.fixture(scope="module", autouse=True)
def schema_checker(cluster):
    """Every answer either installation gives this module's clients is checked against /api/schema/."""
    alpha, _, _ = cluster
    with validating_clients(alpha.url) as checker:
        yield checker


@pytest.fixture(scope="module")
def flow(cluster, schema_checker):
    alpha, beta, files = cluster
    return run_main_flow(alpha, beta, files, epochs=2, progress=False)


def test_every_answer_of_the_main_flow_matches_the_schema(cluster, flow, schema_checker):
    """invite, accept, register, grant, propose, approve, wait, read the model's AUC: all as the schema says."""
    alpha, _, _ = cluster
    assert not schema_checker.violations, "\n".join(schema_checker.violations[:20])
    flow_ops = {
        "v1_workspaces_partners_invitations_create", "v1_workspaces_partners_accept_create",
        "v1_workspaces_datasets_create", "v1_workspaces_datasets_grants_create", "v1_workspaces_tickets_create",
        "v1_workspaces_tickets_approve_create", "v1_workspaces_jobs_retrieve", "v1_workspaces_model_versions_list",
    }  # fmt: skip
    assert flow_ops <= set(schema_checker.seen), sorted(flow_ops - set(schema_checker.seen))
    # The AUC's place is found from the schema alone: ModelVersion.metrics -> metrics -> validation -> auc.
    mv = schema_checker.component("ModelVersion")["properties"]["metrics"]
    summary = (mv.get("$ref") or mv["allOf"][0]["$ref"]).split("/")[-1]
    training = schema_checker.component(summary)["properties"]["metrics"]["$ref"].split("/")[-1]
    split = schema_checker.component(training)["properties"]["validation"]["$ref"].split("/")[-1]
    assert "auc" in schema_checker.component(split)["properties"]
    version = alpha.client("anna").get(f"{A}/model-versions/{flow.model_version_id}/")
    assert version["metrics"]["metrics"]["validation"]["auc"] == pytest.approx(flow.validation_auc)


def test_both_sides_succeed_with_the_exact_intersection(cluster, flow):
    alpha, beta, _ = cluster
    assert flow.statuses == {"alpha": "succeeded", "beta": "succeeded"}, (flow.errors, alpha.log("worker")[-3000:])
    assert flow.intersection_size == int(ROWS * 0.75)
    # beta's copy of the job reports the same intersection from its side
    beta_job = beta.client("bea").get(f"{B}/jobs/{flow.job_id}/")
    assert beta_job["result"]["psi"]["intersection_size"] == flow.intersection_size


def test_the_joint_model_learns(flow):
    # labels depend on both sides' features; a coin flip is 0.5
    assert flow.validation_auc is not None and flow.validation_auc > 0.75


def test_both_sides_hold_the_model_version_under_one_uuid(cluster, flow):
    alpha, beta, _ = cluster
    mine = alpha.client("anna").get(f"{A}/model-versions/{flow.model_version_id}/")
    theirs = beta.client("bea").get(f"{B}/model-versions/{flow.model_version_id}/")
    assert (mine["role"], theirs["role"]) == ("leader", "follower")
    assert mine["ticket"] == theirs["ticket"] == flow.ticket_id
    assert Path(mine["artifact_uri"]).is_dir() and Path(theirs["artifact_uri"]).is_dir()
    assert mine["metrics"]["metrics"]["validation"]["auc"] == pytest.approx(flow.validation_auc)


def test_each_side_sees_the_other_sides_steps(cluster, flow):
    alpha, beta, _ = cluster
    ticket = alpha.client("anna").get(f"{A}/tickets/{flow.ticket_id}/")
    sides = {(e["side"], e["to_status"]) for e in ticket["events"]}
    assert {("local", "proposed"), ("remote", "approved"), ("local", "succeeded")} <= sides
    job = alpha.client("anna").get(f"{A}/jobs/{flow.job_id}/")
    assert job["remote_status"] == "succeeded"
    metrics = alpha.client("anna").get(f"{A}/jobs/{flow.job_id}/metrics/?name=auc&split=validation")
    assert len(metrics) >= 2  # one per epoch
    audit = alpha.client("alice").get(f"{A}/audit-events/?object_id={flow.ticket_id}")
    assert {"ticket.proposed", "ticket.approved", "ticket.succeeded"} <= {e["verb"] for e in audit["results"]}


def test_a_failure_on_one_side_shows_on_both(cluster, flow):
    alpha, beta, files = cluster
    a, b = alpha.client("anna"), beta.client("bea")
    partner = a.get(f"{A}/partners/")["results"][0]
    shared = a.get(f"{A}/partner-datasets/")["results"][0]
    dataset = a.get(f"{A}/datasets/")["results"][0]
    ticket = a.post(
        f"{A}/tickets/",
        {"partner": partner["id"], "kind": "psi", "local_dataset": dataset["id"], "remote_dataset": shared["id"]},
    )
    b.wait_for(f"{B}/tickets/{ticket['id']}/", lambda t: t["status"] == "pending")
    # given beta's file vanished after it was registered
    moved = files["follower"].with_suffix(".away")
    files["follower"].rename(moved)
    try:
        b.post(f"{B}/tickets/{ticket['id']}/approve/", {"comment": "go"})
        failed = lambda j: j["count"] and j["results"][0]["status"] == "failed"  # noqa: E731
        beta_job = b.wait_for(f"{B}/jobs/?ticket={ticket['id']}", failed, timeout=120)["results"][0]
        alpha_job = a.wait_for(
            f"{A}/jobs/?ticket={ticket['id']}",
            lambda j: j["count"] and j["results"][0]["remote_status"] == "failed",
            timeout=60,
        )["results"][0]
    finally:
        moved.rename(files["follower"])
    assert files["follower"].name in beta_job["error"]
    assert files["follower"].name in alpha_job["remote_error"]
    deadline = time.monotonic() + 60
    while alpha_job["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.5)
        alpha_job = a.get(f"{A}/jobs/{alpha_job['id']}/")
    assert alpha_job["status"] == "failed"
    assert a.get(f"{A}/tickets/{ticket['id']}/")["status"] == "failed"
