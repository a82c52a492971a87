"""Two real installations (web, peer service, Celery worker + beat each; SQLite and the
filesystem broker, all on loopback) run federated PSI jobs with the local launcher and
the real runtime: address negotiation, a failure shown on both sides, retry as a new
attempt on both, and a cancel on one side stopping both."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fedsite.localcluster import Installation
from tests.live import Side, wait_peer_port

pytestmark = pytest.mark.launcher

LABELS = "user_id,clicked\n" + "".join(f"u{i},{(i // 2) % 2}\n" for i in range(0, 120, 2))  # both classes
FEATURES = "user_id,age\n" + "".join(f"u{i},{20 + i % 50}\n" for i in range(90))
JOB_TIMEOUT = 120


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("jobs2")
    tag = os.getpid()
    insts = {}
    for name, slug in (("jalpha", "acme"), ("jbeta", "globex")):
        data = tmp / name / "data"
        (data / slug).mkdir(parents=True)  # the workspace's own folder
        (data / slug / "labels.csv").write_text(LABELS)
        (data / slug / "features.csv").write_text(FEATURES)
        insts[name] = Installation(
            name=f"{name}-{tag}",
            var_dir=tmp / name / "var",
            data_roots=[data],
            worker_concurrency=2,
            extra_env={"LOG_LEVEL": "INFO", "CELERY_FILESYSTEM_POLL_S": "0.05"},
        )
    users = {
        "jalpha": ("acme", {"alice": ("owner", "alice-password-1")}),
        "jbeta": ("globex", {"bob": ("owner", "bob-password-1")}),
    }

    def bring_up(inst: Installation) -> None:
        slug, people = users[inst.name.rsplit("-", 1)[0]]
        inst.setup(workspace=slug, users=people)
        inst.start()
        inst.wait_ready(90)
        wait_peer_port(inst)

    try:
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(bring_up, i) for i in insts.values()]:
                f.result()
        alpha = Side(insts["jalpha"], "acme", insts["jalpha"].client("alice"))
        beta = Side(insts["jbeta"], "globex", insts["jbeta"].client("bob"))
        code = alpha.post("partners/invitations/")["code"]
        beta_partner = beta.post("partners/accept/", {"code": code, "name": "alpha"})
        alpha_partner = alpha.wait("partners/", lambda b: len(b["results"]) == 1)["results"][0]
        labels = alpha.post(
            "datasets/", {"name": "labels", "uri": "labels.csv", "id_column": "user_id", "label_column": "clicked"}
        )
        features = beta.post("datasets/", {"name": "features", "uri": "features.csv", "id_column": "user_id"})
        beta.post(f"datasets/{features['id']}/grants/", {"partner": beta_partner["id"]})
        remote = alpha.wait("partner-datasets/", lambda b: len(b["results"]) == 1)["results"][0]
        yield {
            "alpha": alpha,
            "beta": beta,
            "alpha_partner": alpha_partner,
            "labels": labels,
            "features": features,
            "remote": remote,
            "data": tmp / "jalpha" / "data" / "acme",
        }
    finally:
        Installation.stop_all(insts.values())  # each also kills its runtimes


def run_ticket(pair: dict[str, Any], name: str) -> str:
    alpha, beta = pair["alpha"], pair["beta"]
    ticket = alpha.post(
        "tickets/",
        {
            "partner": pair["alpha_partner"]["id"],
            "kind": "psi",
            "local_dataset": pair["labels"]["id"],
            "remote_dataset": pair["remote"]["id"],
            "name": name,
        },
    )
    beta.wait(f"tickets/{ticket['id']}/", lambda t: t["status"] == "pending", timeout=20)
    beta.post(f"tickets/{ticket['id']}/approve/", {"dataset": pair["features"]["id"]})
    return ticket["id"]


def job_of(side: Side, ticket_id: str, attempt: int, predicate, timeout: float = JOB_TIMEOUT) -> dict:
    def ok(body: Any) -> bool:
        jobs = [j for j in body["results"] if j["attempt"] == attempt]
        return bool(jobs) and predicate(jobs[0])

    body = side.wait(f"jobs/?ticket={ticket_id}", ok, timeout=timeout)
    return next(j for j in body["results"] if j["attempt"] == attempt)


def logs(side: Side) -> str:
    return "\n".join(side.inst.log(r)[-3000:] for r in ("worker",))


def test_failure_on_one_side_shows_on_both_then_a_retry_succeeds_on_both(pair):
    alpha, beta = pair["alpha"], pair["beta"]
    labels = pair["data"] / "labels.csv"
    labels.rename(labels.with_suffix(".bak"))  # alpha's runtime will not find its data
    try:
        ticket = run_ticket(pair, "fails, then retried")
        # Alpha shows its own runtime's reason, even if beta's echo of it arrived first.
        mine = job_of(alpha, ticket, 1, lambda j: j["status"] == "failed" and j["error"].startswith("error:"))
        theirs = job_of(beta, ticket, 1, lambda j: j["status"] == "failed")
    finally:
        labels.with_suffix(".bak").rename(labels)
    assert mine["id"] == theirs["id"]  # one job, one UUID, on both installations
    # Beta's job failed with alpha's reason: from the peer message ("the partner's job failed: …")
    # or, if its runtime heard it first, from the runtime link ("the leader cannot run: …").
    reason = mine["error"].removeprefix("error: ")
    assert reason in theirs["error"], theirs
    # Alpha's own reason reaches beta, even when beta's echo had failed alpha first.
    theirs = job_of(beta, ticket, 1, lambda j: j["remote_error"] == mine["error"], timeout=30)
    assert theirs["remote_status"] == "failed"
    job_of(alpha, ticket, 1, lambda j: j["remote_status"] == "failed", timeout=30)  # beta's end came back
    assert alpha.get(f"tickets/{ticket}/")["status"] == "failed"
    assert beta.get(f"tickets/{ticket}/")["status"] == "failed"

    retried = alpha.post(f"jobs/{mine['id']}/retry/", expect=201)
    assert retried["attempt"] == 2
    done_a = job_of(alpha, ticket, 2, lambda j: j["status"] in ("succeeded", "failed"))
    done_b = job_of(beta, ticket, 2, lambda j: j["status"] in ("succeeded", "failed"))
    assert done_a["status"] == "succeeded", (done_a, logs(alpha))
    assert done_b["status"] == "succeeded", (done_b, logs(beta))
    assert done_a["id"] == done_b["id"] == retried["id"]
    assert done_a["result"]["psi"] and done_b["result"]["psi"]
    job_of(alpha, ticket, 2, lambda j: j["remote_status"] == "succeeded", timeout=30)
    job_of(beta, ticket, 2, lambda j: j["remote_status"] == "succeeded", timeout=30)
    assert alpha.get(f"tickets/{ticket}/")["status"] == "succeeded"
    # The follower dialled the address the leader's side chose and sent.
    cfg = json.loads((beta.inst.var_dir / "jobs" / done_b["id"] / "follower.json").read_text())
    leader_cfg = json.loads((alpha.inst.var_dir / "jobs" / done_a["id"] / "leader.json").read_text())
    assert cfg["peer_address"].endswith(leader_cfg["listen_address"].rsplit(":", 1)[1])
    assert cfg["report"]["url"] == f"{beta.inst.url}/api/v1/runtime/jobs/{done_b['id']}/report"


def test_cancel_on_one_side_cancels_both_and_stops_both_runtimes(pair):
    alpha, beta = pair["alpha"], pair["beta"]
    ticket = run_ticket(pair, "cancelled")
    theirs = job_of(beta, ticket, 1, lambda j: j["status"] in ("starting", "running"), timeout=60)
    beta.post(f"jobs/{theirs['id']}/cancel/", {"reason": "wrong quarter"})
    mine = job_of(alpha, ticket, 1, lambda j: j["status"] in ("cancelled", "succeeded", "failed"), timeout=60)
    assert mine["status"] == "cancelled" and mine["error"] == "wrong quarter"
    assert mine["remote_status"] == "cancelled"
    for side, role in ((alpha, "leader"), (beta, "follower")):
        exit_file = side.inst.var_dir / "jobs" / mine["id"] / f"{role}.exit"
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.exists(), f"{role} runtime still running"
        assert json.loads(exit_file.read_text())["code"] != 0
    assert Path(beta.inst.var_dir / "jobs" / mine["id"]).exists()


def test_a_worker_killed_mid_job_and_restarted_finds_how_the_runtime_ended(pair):
    import signal

    alpha, beta = pair["alpha"], pair["beta"]
    ticket = run_ticket(pair, "worker dies")
    # Both runtimes are up (so the leader's address reached beta before alpha's worker goes).
    job_of(beta, ticket, 1, lambda j: j["status"] == "running", timeout=60)
    mine = job_of(alpha, ticket, 1, lambda j: j["status"] == "running", timeout=60)
    alpha.inst.stop_process("worker", sig=signal.SIGKILL)  # worker and beat die; the runtime lives on
    exit_file = alpha.inst.var_dir / "jobs" / mine["id"] / "leader.exit"
    deadline = time.monotonic() + JOB_TIMEOUT
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(exit_file.read_text())["code"] == 0
    assert alpha.get(f"jobs/{mine['id']}/")["status"] in ("starting", "running")  # nobody watched it end
    alpha.inst.restart_process("worker")
    done = job_of(alpha, ticket, 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=60)
    assert done["status"] == "succeeded", (done, logs(alpha))
    job_of(beta, ticket, 1, lambda j: j["status"] == "succeeded" and j["remote_status"] == "succeeded", timeout=60)


def test_a_vertical_tree_ticket_trains_on_both_sides_under_one_model_uuid(pair):
    """Aligned data (no PSI, to stay quick): SecureBoost through the real control plane and launcher."""
    import random

    alpha, beta = pair["alpha"], pair["beta"]
    rng = random.Random(3)
    rows = [(f"t{i}", rng.gauss(0, 1), rng.gauss(0, 1)) for i in range(260)]
    label = {uid: int(a + b + rng.gauss(0, 0.5) > 0) for uid, a, b in rows}
    (pair["data"] / "tree_labels.csv").write_text(
        "user_id,clicked,a\n" + "".join(f"{u},{label[u]},{a:.4f}\n" for u, a, _ in rows)
    )
    beta_folder = pair["data"].parents[2] / "jbeta" / "data" / "globex"
    (beta_folder / "tree_features.csv").write_text("user_id,b\n" + "".join(f"{u},{b:.4f}\n" for u, _, b in rows))
    labels = alpha.post(
        "datasets/",
        {"name": "tree_labels", "uri": "tree_labels.csv", "id_column": "user_id", "label_column": "clicked"},
    )
    features = beta.post("datasets/", {"name": "tree_features", "uri": "tree_features.csv", "id_column": "user_id"})
    partner = beta.results("partners/")[0]
    beta.post(f"datasets/{features['id']}/grants/", {"partner": partner["id"]})
    body = alpha.wait("partner-datasets/", lambda b: any(d["name"] == "tree_features" for d in b["results"]))
    remote = next(d for d in body["results"] if d["name"] == "tree_features")
    tree = {"num_trees": 4, "max_depth": 2, "max_bin": 8, "key_bits": 1024, "early_stopping_rounds": 0}
    ticket = alpha.post(
        "tickets/",
        {
            "partner": pair["alpha_partner"]["id"],
            "kind": "vertical_tree",
            "local_dataset": labels["id"],
            "remote_dataset": remote["id"],
            "name": "trees",
            "params": {"tree": tree},
        },
    )["id"]
    theirs = beta.wait(f"tickets/{ticket}/", lambda t: t["status"] == "pending", timeout=20)
    assert theirs["kind"] == "vertical_tree" and theirs["params"]["tree"]["max_depth"] == 2
    beta.post(f"tickets/{ticket}/approve/", {"dataset": features["id"]})
    done_a = job_of(alpha, ticket, 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=240)
    done_b = job_of(beta, ticket, 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=60)
    assert done_a["status"] == "succeeded", (done_a, logs(alpha))
    assert done_b["status"] == "succeeded", (done_b, logs(beta))
    assert "psi" not in done_a["result"] and done_a["result"]["tree"]["rows"] == 260
    assert done_a["result"]["tree"]["trees"] == done_b["result"]["tree"]["trees"] == 4
    mine = alpha.wait("model-versions/", lambda b: any(m["ticket"] == ticket for m in b["results"]))
    mv = next(m for m in mine["results"] if m["ticket"] == ticket)
    theirs_mv = beta.wait(f"model-versions/{mv['id']}/", lambda m: m["role"] == "follower")
    assert mv["role"] == "leader" and mv["artifact_uri"].endswith("tree/model")
    half = json.loads((Path(mv["artifact_uri"]) / "model.json").read_text())
    assert half["format"] == "fedsite-tree/1" and len(half["trees"]) == 4
    assert json.loads((Path(theirs_mv["artifact_uri"]) / "model.json").read_text())["role"] == "follower"
    assert mv["metrics"]["metrics"]["validation"]["auc"] > 0.6
