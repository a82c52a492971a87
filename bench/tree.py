"""Benchmark: federated SecureBoost (HEU) vs centralized XGBoost ``hist``, and HEU's arithmetic ceiling.

Two shapes, each run in full by both runtimes as separate processes
(``python -m runtime tree``) over mutual TLS on loopback:

* ``large``: the shape of bench/train.py — leader 100k rows x 30 features with the
  labels, follower 100k x 300 features;
* ``small``: 5k rows, 5 % positives (leader 10 features, follower 20).

Beside each, in the same run: XGBoost ``hist`` with the same depth, trees, bins,
learning rate, lambda and min child weight on the joined data (same training and
validation rows, the same early stopping), and HEU's measured encrypt, add and
decrypt rates with the per-tree arithmetic ceiling they imply: the ciphertext
additions the tree's histograms needed (rows summed x follower features, counted
by the leader) at HEU's add rate on all cores, plus one encryption and one
decryption per sampled row.

    .venv/bin/python bench/tree.py            # small: 100 trees; large: 10 trees
    .venv/bin/python bench/tree.py --quick    # small: 100 trees; large: 2 trees

Prints a table and writes bench/results/tree.json (``federated.auc``,
``federated.s_per_tree``, ``centralized.auc``, ``ceiling.s_per_tree`` and the
sizes, per shape; the top-level keys repeat the large shape's figures).
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
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402

TARGETS = {"auc_gap": 0.005, "ceiling_ratio": 2.0}


def make_data(directory: Path, rows: int, fl: int, ff: int, positives: float | None, seed: int) -> tuple[Path, Path]:
    """Labels depend on both sides (linear part plus cross-party interactions); `positives` shifts the base rate."""
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(rows, fl)).astype(np.float32)
    xf = rng.normal(size=(rows, ff)).astype(np.float32)
    wl = rng.normal(size=fl) / np.sqrt(fl)
    wf = rng.normal(size=ff) * (rng.random(ff) < 0.3) / np.sqrt(0.3 * ff)
    z = 1.5 * (xl @ wl + xf @ wf + 0.8 * np.tanh(xl[:, 0] * xf[:, 0]) + 0.5 * np.sin(xl[:, 1] + xf[:, 1]))
    if positives is not None:  # move the intercept until the base rate is right
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.mean(1 / (1 + np.exp(-(z + mid)))) > positives:
                hi = mid
            else:
                lo = mid
        z = z + lo
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.int8)
    ids = np.char.add("id", np.arange(rows).astype(str))
    leader = pd.DataFrame(xl, columns=[f"l{i}" for i in range(fl)])
    leader.insert(0, "id", ids)
    leader["y"] = y
    follower = pd.DataFrame(xf, columns=[f"f{i}" for i in range(ff)])
    follower.insert(0, "id", ids)
    directory.mkdir(parents=True, exist_ok=True)
    lp, fp = directory / "leader.csv", directory / "follower.csv"
    leader.to_csv(lp, index=False, float_format="%.6g")
    follower.to_csv(fp, index=False, float_format="%.6g")
    return lp, fp


def federated(work: Path, lp: Path, fp: Path, tree: dict[str, Any]) -> dict[str, Any]:
    from tests.pki import make_party, tls_config

    alpha, beta = make_party(work / "pki", "alpha"), make_party(work / "pki", "beta")
    port = free_port()
    common = {"job_id": "bench-tree", "tree": tree, "timeout_s": 48 * 3600}
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    t0 = time.perf_counter()
    for role, cfg in cfgs.items():
        path = work / f"{role}.json"
        path.write_text(json.dumps(cfg))
        log = open(work / f"{role}.log", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "runtime", "tree", "--config", str(path)]
        procs[role] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    codes = {}
    for role, (proc, log) in procs.items():
        codes[role] = proc.wait()
        log.close()
    if any(codes.values()):
        tails = "\n".join(
            f"--- {role} (exit {code}):\n" + (work / f"{role}.log").read_text(errors="replace")[-2000:]
            for role, code in codes.items()
        )
        raise SystemExit(f"federated run failed:\n{tails}")
    wall = time.perf_counter() - t0
    res = json.loads((work / "alpha" / "tree" / "result.json").read_text())
    hist = res["history"]
    return {
        "auc": res["metrics"]["validation"]["auc"],
        "ks": res["metrics"]["validation"].get("ks"),
        "s_per_tree": res["s_per_tree"],
        "trees_kept": res["trees"],
        "trees_built": res["trees_built"],
        "tree_s_each": [round(h["tree_s"], 3) for h in hist],
        "encrypt_s_median": float(np.median([h["encrypt_s"] for h in hist])),
        "decrypt_s_median": float(np.median([h["decrypt_s"] for h in hist])),
        "decrypts_median": float(np.median([h.get("decrypts", 0) for h in hist])),
        "pack_slots": max(h.get("pack_slots", 1) for h in hist),
        "shifted_copies": max(h.get("shifted_copies", 1) for h in hist),
        "he_adds_median": float(np.median([h["he_adds"] for h in hist])),
        "sampled_rows": hist[0]["sampled_rows"],
        "wall_s_including_startup": wall,
    }


def centralized(lp: Path, fp: Path, tree: dict[str, Any]) -> dict[str, Any]:
    """XGBoost hist on the joined data: same rows for training and validation, same early stopping."""
    import xgboost as xgb

    from runtime.train.data import read_table, split_rows
    from runtime.train.metrics import binary_metrics

    lt = read_table(str(lp), "id", "y", need_label=True)
    ft = read_table(str(fp), "id", None, need_label=False)
    assert lt.labels is not None
    x = np.concatenate([lt.features.to_numpy(np.float32), ft.features.to_numpy(np.float32)], axis=1)
    y = lt.labels
    tr, va = split_rows(len(y), tree["validation_fraction"], tree["seed"])
    params = {
        "tree_method": "hist",
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "max_depth": tree["max_depth"],
        "eta": tree["learning_rate"],
        "max_bin": tree["max_bin"],
        "lambda": tree["reg_lambda"],
        "min_child_weight": tree["min_child_weight"],
        "min_split_loss": tree.get("gamma", 0.0),
        # The runtimes start from the training rows' log-odds (XGBoost 3's own estimate too); said, not left implicit.
        "base_score": float(np.clip(np.mean(y[tr]), 1e-6, 1 - 1e-6)),
        "nthread": os.cpu_count() or 1,
        "seed": tree["seed"],
    }

    def fit(x: np.ndarray) -> tuple[dict[str, float], int, float, int]:
        dtr, dva = xgb.DMatrix(x[tr], label=y[tr]), xgb.DMatrix(x[va], label=y[va])
        t0 = time.perf_counter()
        booster = xgb.train(
            params,
            dtr,
            num_boost_round=tree["num_trees"],
            evals=[(dva, "validation")],
            early_stopping_rounds=tree["early_stopping_rounds"] or None,
            verbose_eval=False,
        )
        seconds = time.perf_counter() - t0
        best = getattr(booster, "best_iteration", None)
        rounds = (best + 1) if best is not None else tree["num_trees"]
        m = binary_metrics(y[va], booster.predict(dva, iteration_range=(0, rounds)))
        return m, rounds, seconds, booster.num_boosted_rounds()

    m, rounds, seconds, built = fit(x)
    # The same XGBoost on the bins the runtimes use (each side's quantiles of its training rows):
    # separates the binning from the boosting when the AUCs differ.
    from runtime.tree.binning import apply_bins, fit_bins

    bins = np.concatenate(
        [apply_bins(t.features, fit_bins(t.features, tr, tree["max_bin"])) for t in (lt, ft)], axis=1
    ).astype(np.float32)
    mb, rounds_b, _, _ = fit(bins)
    return {
        "auc": m["auc"],
        "ks": m["ks"],
        "trees_kept": rounds,
        "s_per_tree": seconds / max(built, 1),
        "auc_same_bins": mb["auc"],
        "trees_kept_same_bins": rounds_b,
    }


def he_rates(scheme: str, key_bits: int, features: int, bins: int) -> dict[str, float]:
    """Encrypt, add (HEU's bucket sums, the histograms' own operation, all cores) and decrypt per second."""
    from runtime.tree.he import use_threads

    use_threads(0)
    from heu import numpy as hnp
    from heu import phe

    from runtime.tree.core import pack

    kit = hnp.setup(phe.SchemaType.OU if scheme == "ou" else phe.SchemaType.ZPaillier, key_bits)
    rng = np.random.default_rng(0)
    n = 4000 if scheme == "ou" else 600
    packed = kit.array(pack(np.round(rng.normal(size=n) * 2**20), np.round(rng.random(n) * 2**18)).reshape(-1, 1))
    t0 = time.perf_counter()
    ct = kit.encryptor().encrypt(packed)
    enc = n / (time.perf_counter() - t0)
    order = np.ascontiguousarray(rng.integers(0, bins, size=(n, features)).astype(np.int8))
    mask = np.ones(n, dtype=np.int8)
    t0 = time.perf_counter()
    sums = kit.evaluator().feature_wise_bucket_sum(ct, mask, order, bins, True)
    add = n * features / (time.perf_counter() - t0)
    m = min(sums.size, n // 2)
    t0 = time.perf_counter()
    kit.decryptor().decrypt(ct)
    dec = n / (time.perf_counter() - t0)
    del m
    return {
        "encrypt_per_s": enc,
        "add_per_s": add,
        "decrypt_per_s": dec,
        "threads": int(os.environ["YACL_NUM_THREADS"]),
    }


def pack_comparison(scheme: str, key_bits: int, features: int, bins: int) -> dict[str, float]:
    """One node's encrypted histogram (features x bins sums) decrypted unpacked vs packed (follower's shifts included)."""
    from runtime.tree.core import quantize
    from runtime.tree.he import KeyPair, PublicKey, load_ciphertexts, slots_for

    rng = np.random.default_rng(1)
    n = 2000
    gq, hq, _ = quantize(rng.normal(size=n), rng.random(size=n))
    kp = KeyPair(scheme, key_bits)
    key = PublicKey(kp.public_key)
    ct = load_ciphertexts(kp.encrypt(gq, hq), n, "bench")
    order = np.ascontiguousarray(rng.integers(0, bins, size=(n, features)).astype(np.int8))
    mask = np.ones(n, dtype=np.int8)
    count = features * bins
    slots = slots_for(count, key.max_slots)
    out: dict[str, float] = {"sums": count, "slots": slots}
    results = {}
    for name, k in (("unpacked", 1), ("packed", slots)):
        sums = key._ev.batch_feature_wise_bucket_sum(ct, [mask], order, bins, True)[0]
        t0 = time.perf_counter()
        blob = key.pack(sums, k).serialize()
        out[f"{name}_pack_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results[name] = kp.decrypt_sums(blob, count, k)
        out[f"{name}_decrypt_s"] = time.perf_counter() - t0
        out[f"{name}_bytes"] = len(blob)
    assert all(np.array_equal(a, b) for a, b in zip(results["unpacked"], results["packed"], strict=True))
    unpacked = out["unpacked_pack_s"] + out["unpacked_decrypt_s"]
    packed = out["packed_pack_s"] + out["packed_decrypt_s"]
    out["speedup"] = unpacked / packed if packed > 0 else 0.0
    return out


def run_shape(name: str, work: Path, rows: int, fl: int, ff: int, positives: float | None, tree: dict) -> dict:
    t = time.perf_counter()
    lp, fp = make_data(work / name, rows, fl, ff, positives, seed=1)
    rate = float(pd.read_csv(lp, usecols=["y"])["y"].mean())
    print(
        f"[{name}] data: {rows} rows ({rate:.1%} positives), leader {fl} + label, follower {ff} ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    fed = federated(work / f"{name}-run", lp, fp, tree)
    print(
        f"[{name}] federated: {fed['trees_built']} trees, {fed['s_per_tree']:.2f} s/tree, AUC {fed['auc']:.4f}; "
        f"{fed['decrypts_median']:.0f} decryptions a tree ({fed['pack_slots']} sums each), "
        f"{fed['decrypt_s_median']:.2f} s",
        flush=True,
    )
    cen = centralized(lp, fp, tree)
    print(
        f"[{name}] XGBoost hist: {cen['trees_kept']} trees kept, AUC {cen['auc']:.4f}; "
        f"on the runtimes' bins {cen['trees_kept_same_bins']} trees, AUC {cen['auc_same_bins']:.4f}",
        flush=True,
    )
    return {
        "rows": rows,
        "leader_features": fl,
        "follower_features": ff,
        "positive_rate": rate,
        "params": tree,
        "federated": fed,
        "centralized": cen,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small shape in full, 2 trees of the large one")
    ap.add_argument("--large-trees", type=int, default=None, help="trees of the large shape (default 10, quick 2)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the large shape")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument(
        "--pack-slots", type=int, default=0, help="histogram sums per ciphertext (0: as many as the key holds; 1: none)"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tree.json"))
    args = ap.parse_args()
    base = {
        "num_trees": 100,
        "max_depth": 5,
        "learning_rate": 0.1,
        "max_bin": 32,
        "min_child_weight": 1.0,
        "reg_lambda": 1.0,
        "validation_fraction": 0.2,
        "early_stopping_rounds": 10,
        "seed": 7,
        "he_scheme": "ou",
        "key_bits": 2048,
        "peer_timeout_s": 7200,
        "pack_slots": args.pack_slots,
    }
    large_trees = args.large_trees or (2 if args.quick else 10)
    shapes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedsite-bench-tree-") as tmp:
        work = Path(tmp)
        rates = he_rates(base["he_scheme"], base["key_bits"], 30, base["max_bin"])
        print(
            f"HEU {base['he_scheme']} {base['key_bits']} bits, {rates['threads']} threads: "
            f"encrypt {rates['encrypt_per_s']:,.0f}/s, add {rates['add_per_s']:,.0f}/s, decrypt {rates['decrypt_per_s']:,.0f}/s",
            flush=True,
        )
        pk = pack_comparison(base["he_scheme"], base["key_bits"], 60, base["max_bin"])
        rates["packing"] = pk
        print(
            f"one node's {pk['sums']:.0f} sums: unpacked decrypt {pk['unpacked_decrypt_s']:.2f} s; packed "
            f"{pk['slots']:.0f} per ciphertext: follower's shifts {pk['packed_pack_s']:.2f} s + decrypt "
            f"{pk['packed_decrypt_s']:.2f} s ({pk['speedup']:.2f}x; {pk['unpacked_bytes'] / pk['packed_bytes']:.1f}x fewer bytes)",
            flush=True,
        )
        if not args.skip_small:
            shapes["small"] = run_shape("small", work, 5000, 10, 20, 0.05, base)
        if not args.skip_large:
            shapes["large"] = run_shape(
                "large", work, args.rows, 30, 300, None, {**base, "num_trees": large_trees, "early_stopping_rounds": 0}
            )
    for s in shapes.values():
        fed = s["federated"]
        ceiling = (
            fed["he_adds_median"] / rates["add_per_s"]
            + fed["sampled_rows"] / rates["encrypt_per_s"]
            + fed["sampled_rows"] / rates["decrypt_per_s"]
        )
        s["ceiling"] = {
            "s_per_tree": ceiling,
            "he_adds_per_tree": fed["he_adds_median"],
            **{k: v for k, v in rates.items() if k != "packing"},
        }
        s["auc_gap"] = abs(fed["auc"] - s["centralized"]["auc"])
        s["auc_difference"] = fed["auc"] - s["centralized"]["auc"]  # positive: federated above XGBoost
        s["ceiling_ratio"] = fed["s_per_tree"] / ceiling if ceiling > 0 else None
        s["checks"] = {
            "auc_within_0.005": s["auc_gap"] <= TARGETS["auc_gap"],
            "s_per_tree_within_2x_ceiling": s["ceiling_ratio"] is not None
            and s["ceiling_ratio"] <= TARGETS["ceiling_ratio"],
        }
    head = shapes.get("large") or shapes["small"]
    result = {
        "benchmark": "vertical SecureBoost (HEU) vs XGBoost hist; large: leader 100k x 30 + labels, follower 100k x 300; small: 5k rows, 5% positives",
        "quick": args.quick,
        "command": " ".join([".venv/bin/python", "bench/tree.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "he_rates": rates,
        "federated": head["federated"],
        "centralized": head["centralized"],
        "ceiling": head["ceiling"],
        "rows": head["rows"],
        "leader_features": head["leader_features"],
        "follower_features": head["follower_features"],
        "shapes": shapes,
        "targets": TARGETS,
    }
    table = [
        (
            "shape",
            "federated AUC",
            "XGBoost AUC",
            "gap (<= 0.005)",
            "XGBoost, same bins",
            "s/tree",
            "ceiling s/tree",
            "ratio (<= 2)",
            "decrypt s/tree (sums per ct)",
        )
    ]
    for name, s in shapes.items():
        table.append(
            (
                f"{name} {s['rows']}x{s['leader_features']}+{s['follower_features']}",
                f"{s['federated']['auc']:.4f}",
                f"{s['centralized']['auc']:.4f}",
                f"{s['auc_gap']:.4f}",
                f"{s['centralized']['auc_same_bins']:.4f}",
                f"{s['federated']['s_per_tree']:.2f}",
                f"{s['ceiling']['s_per_tree']:.2f}",
                f"{s['ceiling_ratio']:.2f}",
                f"{s['federated']['decrypt_s_median']:.2f} ({s['federated']['pack_slots']})",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for name, s in shapes.items():
        print(f"{name} checks: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in s["checks"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_suffix(".json.tmp")
    tmpf.write_text(json.dumps(result, indent=2) + "\n")
    tmpf.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
