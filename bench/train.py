"""Benchmark: federated split-NN training vs centralized Keras on the same network.

Shape of FATE's published vertical NN benchmark: the leader has 100k rows x 30
features and the labels, the follower 100k rows x 300 features. Both runtimes run
on this machine as separate processes (``python -m runtime train``) over mutual
TLS on loopback; then the same whole network (same initial weights, batch size,
optimizer and epochs) is trained centrally by Keras ``fit`` on the joined data.

    .venv/bin/python bench/train.py            # 10 epochs
    .venv/bin/python bench/train.py --quick    # 3 epochs, same shape
    .venv/bin/python bench/train.py --small    # the ticket's default parameters on small imbalanced data

Prints a table and writes bench/results/train.json. Epoch time is the median over
epochs of one epoch's wall time (training pass plus validation pass and metrics),
for both; samples/s is training rows / that epoch time. AUC is on the held-out
validation rows after the last epoch.

``--small`` is what a new user's first model looks like: a few thousand rows, 5 %
positives, numeric and categorical features split 1:2 between the sides (seeded
synthetic data: a mostly linear signal, skewed and count columns, categories of
4 to 40 levels, 2 % missing values, one mild cross-party interaction). It trains
with the ticket's default parameters (``apps/tickets/params.py``, what the API
applies to a ticket that names none) through two runtime processes over mutual
TLS, scores a held-out set the training never saw with the federated ``score``
command, and fits, in the same run, a logistic regression on the joined data and
one on the leader's features alone (L2, C = 1: scikit-learn's defaults, solved
exactly by Newton's method) on the same preprocessed columns. It writes the
``small`` key of bench/results/train.json (the other keys are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402

TARGETS = {"auc_gap": 0.005, "throughput_ratio": 0.8, "epoch_s": 2.4}
SMALL_TARGET_GAP = 0.01  # federated test AUC at most this much below centralized logistic regression


def make_data(directory: Path, rows: int, fl: int, ff: int, seed: int) -> tuple[Path, Path]:
    """Labels depend on both sides' features (linear part plus cross-party interactions)."""
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(rows, fl)).astype(np.float32)
    xf = rng.normal(size=(rows, ff)).astype(np.float32)
    wl = rng.normal(size=fl) / np.sqrt(fl)
    wf = rng.normal(size=ff) * (rng.random(ff) < 0.3) / np.sqrt(0.3 * ff)
    z = xl @ wl + xf @ wf + 0.8 * np.tanh(xl[:, 0] * xf[:, 0]) + 0.5 * np.sin(xl[:, 1] + xf[:, 1])
    y = (rng.random(rows) < 1 / (1 + np.exp(-1.5 * z))).astype(np.int8)
    ids = np.char.add("id", np.arange(rows).astype(str))
    leader = pd.DataFrame(xl, columns=[f"x{i}" for i in range(fl)])
    leader.insert(0, "id", ids)
    leader["y"] = y
    follower = pd.DataFrame(xf, columns=[f"x{i}" for i in range(ff)])
    follower.insert(0, "id", ids)
    lp, fp = directory / "leader.csv", directory / "follower.csv"
    leader.to_csv(lp, index=False, float_format="%.6g")
    follower.to_csv(fp, index=False, float_format="%.6g")
    return lp, fp


def pair_configs(work: Path, lp: Path, fp: Path, job_id: str, **blocks: dict) -> dict[str, dict]:
    """Leader and follower configs over mutual TLS on a free loopback port."""
    from tests.pki import make_party, tls_config

    alpha, beta = make_party(work / "pki", "alpha"), make_party(work / "pki", "beta")
    port = free_port()
    common = {"job_id": job_id, **blocks}
    return {
        "leader": {
            **common,
            "role": "leader",
            "listen_address": f"127.0.0.1:{port}",
            "tls": tls_config(alpha, beta),
            "data": {"path": str(lp), "id_column": "id", "label_column": "y"},
            "output_dir": str(work / "alpha"),
        },
        "follower": {
            **common,
            "role": "follower",
            "peer_address": f"127.0.0.1:{port}",
            "tls": tls_config(beta, alpha),
            "data": {"path": str(fp), "id_column": "id"},
            "output_dir": str(work / "beta"),
        },
    }


def run_runtimes(work: Path, cfgs: dict[str, dict], command: str) -> float:
    """Both sides as `python -m runtime <command>` processes; returns the wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {}
    t0 = time.perf_counter()
    for role, cfg in cfgs.items():
        path = work / f"{command}-{role}.json"
        path.write_text(json.dumps(cfg))
        log = open(work / f"{command}-{role}.log", "wb")  # noqa: SIM115 - closed below
        procs[role] = (
            subprocess.Popen(
                [sys.executable, "-m", "runtime", command, "--config", str(path)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            ),
            log,
        )
    for role, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        if code != 0:
            tail = (work / f"{command}-{role}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"federated {command} ({role}) failed ({code}):\n{tail}")
    return time.perf_counter() - t0


def federated(work: Path, lp: Path, fp: Path, train: dict) -> dict:
    wall = run_runtimes(work, pair_configs(work, lp, fp, "bench-train", train=train), "train")
    res = json.loads((work / "alpha" / "train" / "result.json").read_text())
    return {
        "auc": res["metrics"]["validation"]["auc"],
        "epoch_s": res["epoch_s"],
        "samples_per_s": res["samples_per_s"],
        "epoch_s_each": [round(h["epoch_s"], 3) for h in res["history"]],
        "train_pass_s_each": [round(h["train_s"], 3) for h in res["history"]],
        "leader_waiting_s_each": [round(h["wait_s"], 3) for h in res["history"]],
        "train_auc": res["metrics"]["train"]["auc"],
        "ks": res["metrics"]["validation"]["ks"],
        "wall_s_including_startup": wall,
    }


def centralized(lp: Path, fp: Path, train: dict) -> dict:
    import keras

    from runtime.train.data import Preprocessor, read_table, split_rows
    from runtime.train.metrics import binary_metrics
    from runtime.train.nn import build_centralized, configure_threads, make_optimizer
    from runtime.train.params import parse_train_params

    p = parse_train_params(train)
    configure_threads(p)
    lt = read_table(str(lp), "id", "y", need_label=True)
    ft = read_table(str(fp), "id", None, need_label=False)
    tr, va = split_rows(len(lt.ids), p.validation_fraction, p.seed)
    xl = Preprocessor.fit(lt.features, tr, p.max_categories).transform(lt.features)
    xf = Preprocessor.fit(ft.features, tr, p.max_categories).transform(ft.features)
    x = np.concatenate([xl, xf], axis=1)
    y = lt.labels
    model = build_centralized(xl.shape[1], xf.shape[1], p, p, train_rows=len(tr))
    model.compile(optimizer=make_optimizer(p), loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    model.fit(
        x[tr],
        y[tr],
        batch_size=p.batch_size,
        epochs=p.epochs,
        shuffle=True,
        validation_data=(x[va], y[va]),
        callbacks=[timer],
        verbose=0,
    )
    m = binary_metrics(y[va], model.predict(x[va], batch_size=8192, verbose=0).ravel())
    epoch_s = float(np.median(timer.times))
    return {
        "auc": m["auc"],
        "epoch_s": epoch_s,
        "samples_per_s": len(tr) / epoch_s,
        "epoch_s_each": [round(t, 3) for t in timer.times],
        "ks": m["ks"],
    }


# -- --small: the ticket's defaults on small imbalanced data ------------------------------------
def make_small_frames(rows: int, seed: int, positive_rate: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leader 4 numbers + 2 categories + label, follower 8 numbers + 4 categories (features 1:2)."""
    rng = np.random.default_rng(seed)
    ln = rng.normal(size=(rows, 4))
    ln[:, 3] = np.exp(0.8 * ln[:, 3])  # skewed, like an amount
    fn = rng.normal(size=(rows, 8))
    fn[:, 6] = np.exp(0.8 * fn[:, 6])
    fn[:, 7] = rng.poisson(2.0, size=rows)  # a count
    levels = {
        "l_channel": (["web", "app", "branch", "phone"], [0.5, 0.3, 0.15, 0.05], 0.5),
        "l_region": ([f"r{i:02d}" for i in range(20)], None, 0.3),
        "f_tier": (["A", "B", "C"], [0.6, 0.3, 0.1], 0.5),
        "f_segment": ([f"s{i:02d}" for i in range(40)], None, 0.3),
        "f_flag": (["y", "n"], [0.2, 0.8], 0.0),
        "f_kind": ([f"k{i}" for i in range(8)], None, 0.4),
    }
    cats = {name: rng.choice(values, size=rows, p=p) for name, (values, p, _s) in levels.items()}
    z = (
        0.45 * ln[:, 0]
        - 0.35 * ln[:, 1]
        + 0.25 * np.log(ln[:, 3])
        + 0.4 * fn[:, 0]
        + 0.3 * fn[:, 1]
        - 0.3 * fn[:, 2]
        + 0.2 * fn[:, 3]
        + 0.25 * np.log(fn[:, 6])
        + 0.1 * fn[:, 7]
        + 0.4 * (cats["f_flag"] == "y")
        + 0.3 * np.tanh(ln[:, 2] * fn[:, 4])  # a mild cross-party interaction
    )
    for name, (values, _p, scale) in levels.items():
        if scale:
            effect = dict(zip(values, rng.normal(0, scale, len(values)), strict=True))
            z = z + np.array([effect[v] for v in cats[name]])
    lo, hi = -12.0, 6.0  # intercept for the wanted share of positives
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < positive_rate else (lo, mid)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(z + mid)))).astype(np.int8)
    for a in (ln, fn):
        a[rng.random(a.shape) < 0.02] = np.nan  # a few missing values
    ids = [f"c{i:06d}" for i in range(rows)]
    leader = pd.DataFrame({"id": ids, **{f"l_num{i}": ln[:, i] for i in range(4)}})
    follower = pd.DataFrame({"id": ids, **{f"f_num{i}": fn[:, i] for i in range(8)}})
    for name, column in cats.items():
        (leader if name.startswith("l_") else follower)[name] = column
    leader["y"] = y
    return leader, follower


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    """L2-penalised logistic regression (intercept unpenalised) by Newton's method; weights then intercept."""
    xb = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
    penalty = np.r_[np.full(x.shape[1], 1.0 / c), 0.0]
    w = np.zeros(xb.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return w


def predict_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(x.astype(np.float64) @ w[:-1] + w[-1])))


def ticket_default_train_params() -> dict:
    """What the API stores for a vertical NN ticket that names no training parameters."""
    from apps.tickets.params import validate_params

    return validate_params("vertical_nn", {})["train"]


def small(args: argparse.Namespace) -> dict:
    from runtime.train.data import Preprocessor
    from runtime.train.metrics import binary_metrics

    train = ticket_default_train_params()
    leader, follower = make_small_frames(args.small_rows + args.small_test_rows, seed=args.small_seed)
    rows = args.small_rows
    with tempfile.TemporaryDirectory(prefix="fedsite-bench-small-") as tmp:
        work = Path(tmp)
        paths = {}
        for name, frame in (("leader", leader), ("follower", follower)):
            paths[name] = work / f"{name}.csv"
            paths[f"{name}_test"] = work / f"{name}_test.csv"
            frame.iloc[:rows].to_csv(paths[name], index=False)
            frame.iloc[rows:].to_csv(paths[f"{name}_test"], index=False)
        y = leader["y"].to_numpy(np.float64)
        y_train, y_test = y[:rows], y[rows:]
        print(
            f"small data: {rows} training rows ({y_train.mean():.1%} positive), {args.small_test_rows} held-out rows; "
            f"leader {leader.shape[1] - 2} features + label, follower {follower.shape[1] - 1} features",
            flush=True,
        )
        print(f"ticket defaults: {json.dumps(train, sort_keys=True)}", flush=True)
        cfgs = pair_configs(work, paths["leader"], paths["follower"], "bench-small", train=train)
        train_wall = run_runtimes(work, cfgs, "train")
        res = json.loads((work / "alpha" / "train" / "result.json").read_text())
        # Federated scoring of the held-out rows with both exported halves (a new job on a new port).
        for side, cfg in cfgs.items():
            cfg["job_id"] = "bench-small-score"
            cfg["score"] = {"data_path": str(paths[f"{side}_test"])}
        port = free_port()
        cfgs["leader"]["listen_address"] = cfgs["follower"]["peer_address"] = f"127.0.0.1:{port}"
        score_wall = run_runtimes(work, cfgs, "score")
        scores = pd.read_csv(work / "alpha" / "score" / "scores.csv")
        if scores["id"].tolist() != leader["id"].iloc[rows:].tolist():
            raise SystemExit("the federated scores are not in the held-out set's order")
        fed_test = binary_metrics(y_test, scores["score"].to_numpy())
    # The logistic regressions see the same preprocessed columns (standardised numbers, one-hot
    # categories, learned on the training rows) and every training row, validation rows included.
    features = {
        name: frame.drop(columns=[c for c in ("id", "y") if c in frame.columns])
        for name, frame in (("leader", leader), ("follower", follower))
    }
    fit_rows = np.arange(rows)
    x = {
        name: Preprocessor.fit(f, fit_rows, int(train.get("max_categories", 64))).transform(f)
        for name, f in features.items()
    }
    joined = np.concatenate([x["leader"], x["follower"]], axis=1)
    w_joined = fit_logistic(joined[:rows], y_train)
    w_leader = fit_logistic(x["leader"][:rows], y_train)
    lr_test = binary_metrics(y_test, predict_logistic(w_joined, joined[rows:]))
    leader_test = binary_metrics(y_test, predict_logistic(w_leader, x["leader"][rows:]))
    gap = lr_test["auc"] - fed_test["auc"]
    return {
        "rows": rows,
        "test_rows": args.small_test_rows,
        "positive_rate": float(y_train.mean()),
        "seed": args.small_seed,
        "params": train,
        "federated": {
            "auc": fed_test["auc"],
            "ks": fed_test["ks"],
            "validation_auc": res["metrics"]["validation"].get("auc"),
            "best_epoch": res["best_epoch"],
            "epochs_run": res["epochs"],
            "stopped_early": res["stopped_early"],
            "train_rows": res["train_rows"],
            "early_stopping_rows": res["early_stopping_rows"],
            "validation_rows": res["validation_rows"],
            "train_wall_s": train_wall,
            "score_wall_s": score_wall,
        },
        "centralized_lr": {"auc": lr_test["auc"], "ks": lr_test["ks"]},
        "leader_only": {"model": "logistic regression on the leader's features", "auc": leader_test["auc"]},
        "gap_to_centralized_lr": gap,
        "target_gap": SMALL_TARGET_GAP,
        "checks": {"federated_within_0.01_of_centralized_lr": gap <= SMALL_TARGET_GAP},
    }


def print_small(r: dict) -> None:
    fed = r["federated"]
    rows = [
        ("held-out AUC", "federated (defaults)", "centralized LR", "leader-only LR", "target"),
        (
            f"{r['test_rows']} rows",
            f"{fed['auc']:.4f}",
            f"{r['centralized_lr']['auc']:.4f}",
            f"{r['leader_only']['auc']:.4f}",
            f"gap <= {SMALL_TARGET_GAP} (gap {r['gap_to_centralized_lr']:+.4f})",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"federated: kept epoch {fed['best_epoch']} of {fed['epochs_run']} (early stopping on "
        f"{fed['early_stopping_rows']} rows), validation AUC {fed['validation_auc']:.4f} on {fed['validation_rows']} rows, "
        f"{fed['train_wall_s']:.1f} s training + {fed['score_wall_s']:.1f} s scoring with process start"
    )
    print("checks: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in r["checks"].items()))


def write_results(out: Path, update: dict) -> None:
    """Merge `update` into the results file: each mode rewrites only its own keys."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update(update)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_suffix(".json.tmp")
    tmpf.write_text(json.dumps(data, indent=2) + "\n")
    tmpf.replace(out)
    print(f"wrote {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 epochs instead of 10 (same data shape)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--leader-features", type=int, default=30)
    ap.add_argument("--follower-features", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--data-dir", default=None, help="keep the generated CSVs here and reuse them on the next run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    ap.add_argument("--small", action="store_true", help="the ticket's default parameters on small imbalanced data")
    ap.add_argument("--small-rows", type=int, default=5000, help="training rows of --small")
    ap.add_argument("--small-test-rows", type=int, default=20000, help="held-out rows of --small")
    ap.add_argument("--small-seed", type=int, default=1)
    args = ap.parse_args()
    if args.small:
        small_result = small(args)
        print_small(small_result)
        write_results(Path(args.out), {"small": small_result})
        return 0
    epochs = args.epochs or (3 if args.quick else 10)
    train = {
        "epochs": epochs,
        "batch_size": args.batch_size,
        "bottom_layers": [64, 32],
        "top_layers": [16],
        "learning_rate": 0.001,
        "validation_fraction": 0.2,
        "log_every_steps": 1000,
        "seed": 7,
        # The throughput comparison trains a fixed number of epochs of the plain network on both sides.
        "early_stopping_patience": 0,
        "l2_regularization": 0.0,
    }
    with tempfile.TemporaryDirectory(prefix="fedsite-bench-train-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        data_dir = (
            Path(args.data_dir) / f"{args.rows}x{args.leader_features}x{args.follower_features}"
            if args.data_dir
            else work
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        lp, fp = data_dir / "leader.csv", data_dir / "follower.csv"
        if not (lp.exists() and fp.exists()):
            lp, fp = make_data(data_dir, args.rows, args.leader_features, args.follower_features, seed=1)
        print(
            f"data: {args.rows} rows, leader {args.leader_features} features + label, follower {args.follower_features} features ({time.perf_counter() - t:.1f} s)",
            flush=True,
        )
        fed = federated(work, lp, fp, train)
        print(
            f"federated done ({fed['wall_s_including_startup']:.1f} s wall with process start and data loading)",
            flush=True,
        )
        cen = centralized(lp, fp, train)
    gap = abs(fed["auc"] - cen["auc"])
    ratio = fed["samples_per_s"] / cen["samples_per_s"]
    checks = {
        "auc_within_0.005": gap <= TARGETS["auc_gap"],
        "throughput_at_least_0.8x": ratio >= TARGETS["throughput_ratio"],
        "epoch_at_most_2.4s": fed["epoch_s"] <= TARGETS["epoch_s"],
    }
    result = {
        "benchmark": "vertical split-NN, leader 30 features + labels, follower 300 features",
        "quick": args.quick,
        "rows": args.rows,
        "leader_features": args.leader_features,
        "follower_features": args.follower_features,
        "params": train,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "federated": fed,
        "centralized": cen,
        "auc_gap": gap,
        "throughput_ratio": ratio,
        "targets": TARGETS,
        "checks": checks,
    }
    rows = [
        ("", "federated", "centralized", "target"),
        ("validation AUC", f"{fed['auc']:.4f}", f"{cen['auc']:.4f}", f"gap <= 0.005 (gap {gap:.4f})"),
        ("samples/s", f"{fed['samples_per_s']:,.0f}", f"{cen['samples_per_s']:,.0f}", f">= 0.8x (ratio {ratio:.2f})"),
        ("epoch s (median)", f"{fed['epoch_s']:.2f}", f"{cen['epoch_s']:.2f}", "<= 2.4"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("checks: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in checks.items()))
    write_results(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
