#!/usr/bin/env python
"""Write docs/benchmarks.md from the latest bench/results/*.json.

Each benchmark under bench/ prints its own table and writes its figures to
bench/results/<name>.json; this page collects the latest figures and the
commands that produced them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTRO = {
    "psi": "Private set intersection, items per second per side, both parties on this 2-core machine, beside Fedlearner's RSA approach (gmpy2 `powmod` with the full exponent, no CRT) and libpsi's own `psi_execute` on the same files with the same semantics (broadcast, aligned output; `libpsi_direct_*`) measured in the same run. Peak memory is per side (the RSS of each side's process tree). `share_of_ceiling` is the job's CPU-bound rate over the arithmetic ceiling measured in the same run (`share_of_ceiling_wall`: the wall-clock rate, which on this shared machine depends on the other users' load). Sizes and rows not run by the last command keep their figures from earlier runs (see docs/psi.md, Benchmark); `skipped` names the rows a run left out and why.",
    "train": "Vertical split-NN training on a FATE-shaped dataset (leader 100k × 30 with labels, follower 100k × 300), beside centralized Keras training of the same network on the joined data in the same run. The `small.*` figures come from `.venv/bin/python bench/train.py --small`: the ticket's default parameters on 5,000 rows with 5 % positives, scored on 20,000 held-out rows beside logistic regression on the joined data and on the leader's features alone.",
    "registration": "Dataset registration: inspecting a CSV (schema, statistics, id uniqueness, checksum), Arrow's streaming reader beside the row-by-row csv-module reader measured in the same run.",
    "faults": "Fault benchmark: two installations negotiate tickets from both sides (propose, approve, reject, withdraw, and the races between them) through the REST API while a chaos loop kills and restarts either side's peer service and worker; then one side's peer service is down for 5 s to 3 min while the other proposes (recovery = its return to the last delivery); then whole installations are killed soft (SIGTERM) and hard (SIGKILL, runtimes too) mid-job. Counted at quiescence from both databases: tickets lost (one side only), duplicated (a repeated timeline step, audit event, inbox application or job), diverged (different status), jobs stuck (never end, end differently, or succeed without their result or both model halves). Targets: >= 1,000 trials with 0 lost, duplicated, diverged and stuck; recovery p95 < 5 s. `history` keeps earlier runs' headline figures: `history[0]` is the code before issue 17's fixes (3cb59dc), `history[1]` has the job and recovery fixes but not yet the race rule (4a7f6db); the table is the run with all of them. Also measured: a sender's worker SIGKILLed mid-delivery held its partner's messages 63-64 s before the lease fix (c704bca), 1.6-4.7 s after. `server_errors` counts decisions answered 500: the table's 34 were PostgreSQL deadlocks in ticket reconciliation, fixed right after by one lock order (569e1d4); `--quick` on e0110af: 0 lost, duplicated, diverged, stuck and 5xx, recovery p95 0.23 s. The tickets behind every figure are under `details` in the JSON.",
    "tree": "Vertical SecureBoost (HEU, Okamoto-Uchiyama 2048 bits) between two runtime processes over mutual TLS, beside XGBoost `hist` on the joined data (same depth, trees, bins, learning rate, lambda, rows and early stopping) and the per-tree arithmetic ceiling implied by HEU's encrypt, add and decrypt rates measured in the same run (the ciphertext additions the tree's histograms needed at HEU's add rate on both cores, plus one encryption and one decryption per sampled row). Shapes: `large` as bench/train.py (100k rows, leader 30 features + labels, follower 300; only a few trees), `small` 5k rows with 5 % positives (leader 10, follower 20). `centralized.auc_same_bins` is XGBoost on the bins the runtimes use. The runtimes bin numbers with XGBoost hist's own cut points (its quantile sketch of each side's training rows, value < cut goes left), and XGBoost gets base_score = the training rows' positive rate (its own estimate too) and min_split_loss = gamma explicitly; before that, the small shape's federated AUC was 0.8610 against XGBoost's 0.8463, a gap that was binning alone (the same XGBoost on the runtimes' old quantile bins: 0.8610). The follower packs `federated.pack_slots` histogram sums per ciphertext before the leader decrypts (`federated.decrypts_median` decryptions a tree). The top-level `federated`, `centralized` and `ceiling` figures repeat the large shape's.",
    "serving": "Online serving of a split-NN model (leader 20 features, follower 40, bottom [32], top [8]): two serving runtime processes over mutual TLS on loopback, called through the leader's ServingApi as its web process calls it, beside the same two halves answering in one process (runtime/serve/model.py `WholeModel`, reading the same SQLite stores) in the same run. Latency: one call at a time (1 id, 100 ids); throughput: 8 client threads sending 100-id calls. Targets: `predict_1.p99_ms` < 25; `throughput_ratio` >= 0.5.",
    "peer_sync": "Time from an approval on beta to alpha's copy showing approved, with real workers and gRPC over mutual TLS on loopback. Fedlearner's console polls every 60 s.",
}


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in obj.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, obj)]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def main() -> int:
    out = [
        "# Benchmarks",
        "",
        "Every figure below was measured on the project's 2-core, 24 GiB machine by the command named with it;",
        "each script prints the same table and writes `bench/results/<name>.json`. `make bench` runs them all",
        "(`make bench-quick` for the quick sizes); `scripts/bench_page.py` rewrites this page.",
        "",
    ]
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        name = path.stem
        data = json.loads(path.read_text())
        out += [f"## {name}", ""]
        if name in INTRO:
            out += [INTRO[name], ""]
        command = data.get("command") if isinstance(data, dict) else None
        out += [f"Command: `{command or f'.venv/bin/python bench/{name}.py'}`", ""]
        out += ["| figure | value |", "|---|---|"]
        for key, value in flatten(data):
            if key.startswith("history"):
                continue
            if key != "command" and not key.startswith("details."):  # details: the tickets behind the figures
                out.append(f"| `{key}` | {fmt(value)} |")
        for i, run in enumerate(data.get("history") or [] if isinstance(data, dict) else []):
            figures = ", ".join(
                f"{k} {fmt(v)}" for k, v in run.items() if k not in ("measured_at", "commit", "command")
            )
            out.append(
                f"| `history[{i}]` | {run.get('measured_at')} at {run.get('commit')}: {figures} (`{run.get('command')}`) |"
            )
        out.append("")
    target = ROOT / "docs" / "benchmarks.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(out))
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
