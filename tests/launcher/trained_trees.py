"""A SecureBoost model trained through two live installations, for the tests that use one (scoring, serving).

Alpha (leader) holds `user_id,clicked,a`, Beta (follower) `user_id,b`, for `n` users `s0..`; the caller's extra
tables (new data to score or serve) are written and registered beside them, Beta's granted to Alpha.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.launcher.test_two_installations import job_of, logs

Row = tuple[str, float, float]  # user id, alpha's feature a, beta's feature b


@dataclass
class Trained:
    rows: list[Row]
    label: dict[str, int]
    ds: dict[str, dict[str, Any]] = field(default_factory=dict)  # this side's datasets by name
    remote: dict[str, dict[str, Any]] = field(default_factory=dict)  # Beta's datasets as Alpha sees them
    mv: dict[str, Any] = field(default_factory=dict)  # Alpha's half
    mv_b: dict[str, Any] = field(default_factory=dict)  # Beta's half
    files: dict[str, Path] = field(default_factory=dict)  # every table's file by name


def alpha_table(rows: list[Row], label: dict[str, int] | None = None) -> str:
    if label is None:
        return "user_id,a\n" + "".join(f"{u},{a:.4f}\n" for u, a, _ in rows)
    return "user_id,clicked,a\n" + "".join(f"{u},{label[u]},{a:.4f}\n" for u, a, _ in rows)


def beta_table(rows: list[Row]) -> str:
    return "user_id,b\n" + "".join(f"{u},{b:.4f}\n" for u, _, b in rows)


def users(n: int, seed: int) -> tuple[list[Row], dict[str, int]]:
    rng = random.Random(seed)
    rows = [(f"s{i}", rng.gauss(0, 1), rng.gauss(0, 1)) for i in range(n)]
    return rows, {uid: int(a + b + rng.gauss(0, 0.5) > 0) for uid, a, b in rows}


def train_trees(
    pair: dict[str, Any],
    trained: Trained,
    prefix: str,
    tables: dict[str, tuple[str, str, bool]],
    tree: dict[str, Any],
) -> Trained:
    """Register the training tables and `tables` (name: (side "alpha"|"beta", CSV text, labelled)), train
    `vertical_tree` on them, and return the model version's two halves."""
    alpha, beta = pair["alpha"], pair["beta"]
    folders = {"alpha": pair["data"], "beta": pair["data"].parents[2] / "jbeta" / "data" / "globex"}
    everything = {
        f"{prefix}_train_labels": ("alpha", alpha_table(trained.rows, trained.label), True),
        f"{prefix}_train_features": ("beta", beta_table(trained.rows), False),
        **tables,
    }
    partner_b = beta.results("partners/")[0]
    for name, (where, text, labelled) in everything.items():
        trained.files[name] = folders[where] / f"{name}.csv"
        trained.files[name].write_text(text)
        side = alpha if where == "alpha" else beta
        body = {"name": name, "uri": f"{name}.csv", "id_column": "user_id"}
        trained.ds[name] = side.post("datasets/", {**body, **({"label_column": "clicked"} if labelled else {})})
        if side is beta:
            beta.post(f"datasets/{trained.ds[name]['id']}/grants/", {"partner": partner_b["id"]})
    granted = {name for name, (where, _, _) in everything.items() if where == "beta"}
    body = alpha.wait("partner-datasets/", lambda b: granted <= {d["name"] for d in b["results"]})
    trained.remote = {d["name"]: d for d in body["results"]}

    train = alpha.post(
        "tickets/",
        {
            "partner": pair["alpha_partner"]["id"],
            "kind": "vertical_tree",
            "local_dataset": trained.ds[f"{prefix}_train_labels"]["id"],
            "remote_dataset": trained.remote[f"{prefix}_train_features"]["id"],
            "name": f"trees for {prefix}",
            "params": {"tree": tree},
        },
    )["id"]
    beta.wait(f"tickets/{train}/", lambda t: t["status"] == "pending", timeout=20)
    beta.post(f"tickets/{train}/approve/", {"dataset": trained.ds[f"{prefix}_train_features"]["id"]})
    done = job_of(alpha, train, 1, lambda j: j["status"] in ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded", (done, logs(alpha))
    listed = alpha.wait("model-versions/", lambda b: any(m["ticket"] == train for m in b["results"]))
    trained.mv = next(m for m in listed["results"] if m["ticket"] == train)
    trained.mv_b = beta.wait(f"model-versions/{trained.mv['id']}/", lambda m: m["role"] == "follower")
    return trained
