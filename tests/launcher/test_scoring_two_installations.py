"""Batch scoring through two real installations: a SecureBoost model trained with the
real runtime, then a `psi_score` ticket the partner approves; the leader's scores become
a registered dataset equal to the whole model's scores in one process."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.launcher.test_two_installations import job_of, logs, pair  # noqa: F401 - `pair` is a fixture
from tests.runtime.test_serve import whole_tree_scores

pytestmark = pytest.mark.launcher


def test_a_score_ticket_gives_the_leader_a_registered_scores_dataset(pair):  # noqa: F811 - the fixture
    alpha, beta = pair["alpha"], pair["beta"]
    beta_folder = pair["data"].parents[2] / "jbeta" / "data" / "globex"
    rng = random.Random(7)
    rows = [(f"s{i}", rng.gauss(0, 1), rng.gauss(0, 1)) for i in range(240)]
    label = {uid: int(a + b + rng.gauss(0, 0.5) > 0) for uid, a, b in rows}
    train_l, train_f = pair["data"] / "score_train_labels.csv", beta_folder / "score_train_features.csv"
    train_l.write_text("user_id,clicked,a\n" + "".join(f"{u},{label[u]},{a:.4f}\n" for u, a, _ in rows))
    train_f.write_text("user_id,b\n" + "".join(f"{u},{b:.4f}\n" for u, _, b in rows))
    # New data to score: alpha (labelled) has s0..s199 plus x1; beta has s20..s239: PSI keeps s20..s199.
    (pair["data"] / "score_a.csv").write_text(
        "user_id,clicked,a\n" + "".join(f"{u},{label[u]},{a:.4f}\n" for u, a, _ in rows[:200]) + "x1,1,0.25\n"
    )
    (beta_folder / "score_b.csv").write_text("user_id,b\n" + "".join(f"{u},{b:.4f}\n" for u, _, b in rows[20:]))
    partner_b = beta.results("partners/")[0]
    ds: dict[str, dict[str, Any]] = {}
    for side, name, uri, label_col in (
        (alpha, "score_train_labels", "score_train_labels.csv", "clicked"),
        (alpha, "score_a", "score_a.csv", "clicked"),
        (beta, "score_train_features", "score_train_features.csv", ""),
        (beta, "score_b", "score_b.csv", ""),
    ):
        body = {"name": name, "uri": uri, "id_column": "user_id", **({"label_column": label_col} if label_col else {})}
        ds[name] = side.post("datasets/", body)
        if side is beta:
            beta.post(f"datasets/{ds[name]['id']}/grants/", {"partner": partner_b["id"]})
    body = alpha.wait(
        "partner-datasets/", lambda b: {"score_b", "score_train_features"} <= {d["name"] for d in b["results"]}
    )
    remote = {d["name"]: d for d in body["results"]}

    tree = {"num_trees": 3, "max_depth": 2, "max_bin": 8, "key_bits": 1024, "early_stopping_rounds": 0}
    train = alpha.post(
        "tickets/",
        {
            "partner": pair["alpha_partner"]["id"],
            "kind": "vertical_tree",
            "local_dataset": ds["score_train_labels"]["id"],
            "remote_dataset": remote["score_train_features"]["id"],
            "name": "trees to score with",
            "params": {"tree": tree},
        },
    )["id"]
    beta.wait(f"tickets/{train}/", lambda t: t["status"] == "pending", timeout=20)
    beta.post(f"tickets/{train}/approve/", {"dataset": ds["score_train_features"]["id"]})
    done = job_of(alpha, train, 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded", (done, logs(alpha))
    mv = alpha.wait("model-versions/", lambda b: any(m["ticket"] == train for m in b["results"]))
    mv = next(m for m in mv["results"] if m["ticket"] == train)
    mv_b = beta.wait(f"model-versions/{mv['id']}/", lambda m: m["role"] == "follower")

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
