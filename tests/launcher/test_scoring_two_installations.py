"""Batch scoring through two real installations: a SecureBoost model trained with the
real runtime, then a `psi_score` ticket the partner approves; the leader's scores become
a registered dataset equal to the whole model's scores in one process."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.launcher.test_two_installations import job_of, logs, pair  # noqa: F401 - `pair` is a fixture
from tests.launcher.trained_trees import Trained, alpha_table, beta_table, train_trees, users
from tests.runtime.test_serve import whole_tree_scores

pytestmark = pytest.mark.launcher


def test_a_score_ticket_gives_the_leader_a_registered_scores_dataset(pair):  # noqa: F811 - the fixture
    alpha, beta = pair["alpha"], pair["beta"]
    rows, label = users(240, seed=7)
    # New data to score: alpha (labelled) has s0..s199 plus x1; beta has s20..s239: PSI keeps s20..s199.
    tables = {
        "score_a": ("alpha", alpha_table(rows[:200], label) + "x1,1,0.25\n", True),
        "score_b": ("beta", beta_table(rows[20:]), False),
    }
    tree = {"num_trees": 3, "max_depth": 2, "max_bin": 8, "key_bits": 1024, "early_stopping_rounds": 0}
    t = train_trees(pair, Trained(rows, label), "score", tables, tree)
    ds, remote, mv, mv_b = t.ds, t.remote, t.mv, t.mv_b
    train_l, train_f = t.files["score_train_labels"], t.files["score_train_features"]

    def proposal(model_version: str) -> dict[str, Any]:
        return {
            "partner": pair["alpha_partner"]["id"],
            "kind": "psi_score",
            "local_dataset": ds["score_a"]["id"],
            "remote_dataset": remote["score_b"]["id"],
            "name": "score new users",
            "params": {"score": {"model_version": model_version}},
        }

    # Bad inputs are refused with the reason, and create nothing.
    before = len(alpha.results("tickets/"))
    for bad, why in (
        ("", "name the model version to score"),
        ("not-a-uuid", "is not a model version id"),
        ("00000000-0000-4000-8000-000000000000", "no model version"),
    ):
        r = alpha.api.request("POST", alpha.path("tickets/"), json=proposal(bad))
        assert r.status_code == 400 and why in r.text, r.text
    assert len(alpha.results("tickets/")) == before

    ticket = alpha.post("tickets/", proposal(mv["id"]))
    assert ticket["role"] == "leader"
    theirs = beta.wait(f"tickets/{ticket['id']}/", lambda t: t["status"] == "pending", timeout=20)
    assert theirs["role"] == "follower" and theirs["params"]["score"]["model_version"] == mv["id"]
    beta.post(f"tickets/{ticket['id']}/approve/", {"dataset": ds["score_b"]["id"]})
    job = job_of(alpha, ticket["id"], 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=240)
    assert job["status"] == "succeeded", (job, logs(alpha))
    assert set(job["result"]["score"]["metrics"]) >= {"auc", "ks", "loss"}

    # The leader's scores are a registered dataset in its own folder, equal to the whole model's scores.
    job = job_of(alpha, ticket["id"], 1, lambda j: "scores_dataset" in j["result"], timeout=60)
    assert "id" in job["result"]["scores_dataset"], job["result"]["scores_dataset"]
    scores = alpha.get(f"datasets/{job['result']['scores_dataset']['id']}/")
    assert scores["name"] == "score new users — scores #1" and scores["row_count"] == 180
    path = Path(scores["uri"])
    assert path.is_relative_to(pair["data"])
    with path.open() as f:
        got = {r["user_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert set(got) == {f"s{i}" for i in range(20, 200)}
    ids = sorted(got)
    want = whole_tree_scores(Path(mv["artifact_uri"]), Path(mv_b["artifact_uri"]), train_l, train_f, ids, "user_id")
    np.testing.assert_allclose([got[i] for i in ids], want, atol=1e-6)
    # The download streams the same file; the follower has no scores, and no scores dataset.
    r = alpha.api.request("GET", alpha.path(f"jobs/{job['id']}/outputs/scores/download/"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content == path.read_bytes()
    theirs_job = job_of(beta, ticket["id"], 1, lambda j: j["status"] == "succeeded")
    r = beta.api.request("GET", beta.path(f"jobs/{theirs_job['id']}/outputs/scores/download/"))
    assert r.status_code == 404
    assert not any(d["name"] == scores["name"] for d in beta.results("datasets/"))

    # An archived model version cannot score: the proposal is refused.
    alpha.post(f"model-versions/{mv['id']}/archive/")
    r = alpha.api.request("POST", alpha.path("tickets/"), json=proposal(mv["id"]))
    assert r.status_code == 400 and "archived" in r.text, r.text
