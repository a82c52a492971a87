"""Online serving through two real installations: a SecureBoost model trained with the
real runtime, promoted on both sides, served by a `serve` ticket both approved, asked
for predictions through the leader's API, and stopped by the follower's cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.launcher.test_two_installations import job_of, logs, pair  # noqa: F401 - `pair` is a fixture
from tests.launcher.trained_trees import Trained, alpha_table, beta_table, train_trees, users
from tests.runtime.test_serve import whole_tree_scores

pytestmark = pytest.mark.launcher


def predict(side: Any, mv: str, body: dict[str, Any]) -> Any:
    return side.api.request("POST", side.path(f"model-versions/{mv}/predict"), json=body)


def test_a_serve_ticket_serves_predictions_until_the_partner_stops_it(pair):  # noqa: F811 - the fixture
    alpha, beta = pair["alpha"], pair["beta"]
    rows, label = users(260, seed=5)
    # Serving tables: alpha lacks s240..s259 and has x1, which beta lacks.
    tables = {
        "serve_a": ("alpha", alpha_table(rows[:240]) + "x1,0.25\n", False),
        "serve_b": ("beta", beta_table(rows), False),
    }
    tree = {"num_trees": 4, "max_depth": 2, "max_bin": 8, "key_bits": 1024, "early_stopping_rounds": 0}
    t = train_trees(pair, Trained(rows, label), "serve", tables, tree)
    ds, remote, mv, mv_b = t.ds, t.remote, t.mv, t.mv_b
    train_l, train_f = t.files["serve_train_labels"], t.files["serve_train_features"]

    serve_body = {
        "partner": pair["alpha_partner"]["id"],
        "kind": "serve",
        "local_dataset": ds["serve_a"]["id"],
        "remote_dataset": remote["serve_b"]["id"],
        "name": "serve trees",
        "params": {"serve": {"model_version": mv["id"], "deadline_ms": 3000}},
    }
    # A candidate cannot be served: the proposal is refused with the reason.
    refused = alpha.api.request("POST", alpha.path("tickets/"), json=serve_body)
    assert refused.status_code == 400 and "promote it to production first" in refused.text
    alpha.post(f"model-versions/{mv['id']}/promote/")
    beta.wait(f"model-versions/{mv_b['id']}/", lambda m: m["stage"] == "production", timeout=30)
    alpha.wait(f"model-versions/{mv['id']}/", lambda m: m["stage"] == "production", timeout=30)

    ticket = alpha.post("tickets/", serve_body)
    assert ticket["role"] == "leader"
    theirs = beta.wait(f"tickets/{ticket['id']}/", lambda t: t["status"] == "pending", timeout=20)
    assert theirs["role"] == "follower" and theirs["params"]["serve"]["model_version"] == mv["id"]
    beta.post(f"tickets/{ticket['id']}/approve/", {"dataset": ds["serve_b"]["id"]})
    job = job_of(alpha, ticket["id"], 1, lambda j: j["status"] == "running" and "serve" in j["result"], timeout=300)
    job_of(beta, ticket["id"], 1, lambda j: j["status"] == "running", timeout=60)

    ids = [f"s{i}" for i in range(0, 200, 20)]
    ask = {"ids": [*ids, "x1", "s250", "s251"], "features": {"s251": {"a": f"{rows[251][1]:.4f}"}}}
    deadline = time.monotonic() + 60
    while (r := predict(alpha, mv["id"], ask)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)  # the follower's runtime is still connecting
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["job"] == job["id"] and got["model_version"] == mv["id"]
    by = {p["id"]: p for p in got["predictions"]}
    assert [p["id"] for p in got["predictions"]] == ask["ids"]
    want = whole_tree_scores(
        Path(mv["artifact_uri"]), Path(mv_b["artifact_uri"]), train_l, train_f, [*ids, "s251"], "user_id"
    )
    np.testing.assert_allclose([by[i]["score"] for i in [*ids, "s251"]], want, atol=1e-6)
    assert by["x1"]["score"] is None and by["x1"]["reason"] == "unknown_to_partner"
    assert by["s250"]["score"] is None and by["s250"]["reason"] == "unknown_to_leader"

    # Bad calls name the problem; the follower's side serves no predictions.
    bad = predict(alpha, mv["id"], {"ids": "s1"})
    assert bad.status_code == 400 and "ids" in bad.json()
    follower_side = predict(beta, mv["id"], {"ids": ["s1"]})
    assert follower_side.status_code == 400 and "follower's half" in follower_side.text

    # Both sides audit what they served; the partner's counts arrive as shared metrics.
    def counted(body: Any) -> bool:
        sides = {m["side"] for m in body if m["name"] == "predictions" and m["value"] >= 11}
        return sides == {"local", "remote"}

    alpha.wait(f"jobs/{job['id']}/metrics/?split=serve", counted, timeout=60)

    # The follower stops it, with a reason the leader sees; both runtimes end and predict answers 503.
    theirs_job = job_of(beta, ticket["id"], 1, lambda j: j["status"] == "running")
    beta.post(f"jobs/{theirs_job['id']}/cancel/", {"reason": "campaign over"})
    mine = job_of(alpha, ticket["id"], 1, lambda j: j["status"] == "cancelled", timeout=60)
    assert mine["error"] == "campaign over"
    for side, role in ((alpha, "leader"), (beta, "follower")):
        exit_file = side.inst.var_dir / "jobs" / job["id"] / f"{role}.exit"
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.exists(), f"the {role}'s serving runtime still runs"
        assert "code" in json.loads(exit_file.read_text())
    stopped = predict(alpha, mv["id"], {"ids": ["s1"]})
    assert stopped.status_code == 503 and "not being served" in stopped.json()["detail"]
