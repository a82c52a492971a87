"""Benchmark: federated split-NN training vs centralized Keras on the same network.

Shape of FATE's published vertical NN benchmark: the leader has 100k rows x 30
features and the labels, the follower 100k rows x 300 features. Both runtimes run
on this machine as separate processes (``python -m runtime train``) over mutual
TLS on loopback; then the same whole network (same initial weights, batch size,
optimizer and epochs) is trained centrally by Keras ``fit`` on the joined data.

    .venv/bin/python bench/train.py            # 10 epochs
    .venv/bin/python bench/train.py --quick    # 3 epochs, same shape

Prints a table and writes bench/results/train.json. Epoch time is the median over
epochs of one epoch's wall time (training pass plus validation pass and metrics),
for both; samples/s is training rows / that epoch time. AUC is on the held-out
validation rows after the last epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"auc_gap": 0.005, "throughput_ratio": 0.8, "epoch_s": 2.4}


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def federated(work: Path, lp: Path, fp: Path, train: dict) -> dict:
    from tests.pki import make_party, tls_config

    alpha, beta = make_party(work / "pki", "alpha"), make_party(work / "pki", "beta")
    port = free_port()
    common = {"job_id": "bench-train", "train": train}
    cfgs = {
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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {}
    t0 = time.perf_counter()
    for role, cfg in cfgs.items():
        path = work / f"{role}.json"
        path.write_text(json.dumps(cfg))
        log = open(work / f"{role}.log", "wb")  # noqa: SIM115 - closed below
        procs[role] = (
            subprocess.Popen(
                [sys.executable, "-m", "runtime", "train", "--config", str(path)],
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
            tail = (work / f"{role}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"federated {role} failed ({code}):\n{tail}")
    wall = time.perf_counter() - t0
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
    model = build_centralized(xl.shape[1], xf.shape[1], p, p)
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
    args = ap.parse_args()
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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_suffix(".json.tmp")
    tmpf.write_text(json.dumps(result, indent=2) + "\n")
    tmpf.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
