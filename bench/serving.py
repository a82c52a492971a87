"""Benchmark: online two-party serving vs the same whole model answering in one process.

A split-NN model is trained by two runtime processes (``python -m runtime train``)
over mutual TLS on loopback; then two serving runtimes (``python -m runtime serve``)
serve it, and this process calls the leader's ``ServingApi.Predict`` as its
installation's web process does (gRPC, bearer token). Measured, in the same run:

* latency p50/p99 of predict calls of 1 id and of 100 ids (one call at a time);
* sustained predictions/s: several client threads sending 100-id calls for a while;
* the baseline: both halves loaded in this one process (runtime/serve/model.py
  ``WholeModel``) reading both sides' rows from the same kind of SQLite store,
  measured the same way (1 id, 100 ids, and the same client threads).

    .venv/bin/python bench/serving.py            # 20k ids, 500/300 calls, 10 s of load
    .venv/bin/python bench/serving.py --quick    # 5k ids, 200/100 calls, 3 s of load

Prints a table and writes bench/results/serving.json (``predict_1.p99_ms``,
``predict_100.p99_ms``, ``throughput_per_s``, ``baseline.predict_1.p99_ms`` and the rest).
Targets: p99 for one id under 25 ms; federated throughput at least 0.5x the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402

TARGETS = {"predict_1_p99_ms": 25.0, "throughput_ratio": 0.5}
TOKEN = secrets.token_urlsafe(16)  # the serving API token of this run
TRAIN = {"epochs": 1, "batch_size": 256, "bottom_layers": [32], "top_layers": [8], "early_stopping_patience": 0}


def make_data(directory: Path, rows: int, fl: int, ff: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    xl = rng.normal(size=(rows, fl)).astype(np.float32)
    xf = rng.normal(size=(rows, ff)).astype(np.float32)
    z = xl[:, :3].sum(axis=1) - xf[:, :3].sum(axis=1) + np.tanh(xl[:, 3] * xf[:, 3])
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


def configs(work: Path, lp: Path, fp: Path, job: str, **blocks: Any) -> dict[str, dict[str, Any]]:
    from tests.pki import make_party, tls_config

    alpha, beta = make_party(work / "pki", "alpha"), make_party(work / "pki", "beta")
    port = free_port()
    common = {"job_id": job, "timeout_s": 48 * 3600, **blocks}
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


def spawn(work: Path, command: str, cfgs: dict[str, dict[str, Any]]) -> dict[str, tuple[subprocess.Popen, Path]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    for role, cfg in cfgs.items():
        path = work / f"{command}-{role}.json"
        path.write_text(json.dumps(cfg))
        log = work / f"{command}-{role}.log"
        with log.open("wb") as fh:
            cmd = [sys.executable, "-m", "runtime", command, "--config", str(path)]
            procs[role] = (subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env), log)
    return procs


def train(work: Path, lp: Path, fp: Path) -> None:
    procs = spawn(work, "train", configs(work / "train", lp, fp, "bench-serving-train", train=TRAIN))
    codes = {role: proc.wait() for role, (proc, _) in procs.items()}
    if any(codes.values()):
        tails = "\n".join(f"--- {r}:\n" + procs[r][1].read_text(errors="replace")[-2000:] for r in codes)
        raise SystemExit(f"training failed:\n{tails}")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "calls": len(ms)}


def latency(call: Callable[[list[str]], Any], ids: list[str], size: int, calls: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    for _ in range(20):  # warm-up
        call(rng.sample(ids, size))
    out = []
    for _ in range(calls):
        batch = rng.sample(ids, size)
        t0 = time.perf_counter()
        call(batch)
        out.append((time.perf_counter() - t0) * 1000)
    return percentiles(out)


def throughput(call: Callable[[list[str]], int], ids: list[str], threads: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(k: int) -> None:
        rng = random.Random(k)
        while time.perf_counter() < stop:
            counts[k] += call(rng.sample(ids, 100))

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def command_args(argv: list[str]) -> list[str]:
    """The arguments that change what is measured (--work and --out only say where files go)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--work", "--out"):
            skip = True
            continue
        if not a.startswith(("--work=", "--out=")):
            out.append(a)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5k ids, fewer calls, 3 s of load")
    ap.add_argument("--rows", type=int, default=None, help="ids served (default 20000, quick 5000)")
    ap.add_argument("--threads", type=int, default=8, help="client threads of the throughput run")
    ap.add_argument("--work", default="", help="keep the data and trained model here (reused when present)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = ap.parse_args()
    rows = args.rows or (5000 if args.quick else 20_000)
    calls_1, calls_100 = (200, 100) if args.quick else (500, 300)
    load_s = 3.0 if args.quick else 10.0
    fl, ff = 20, 40

    import grpc

    from fedsite_proto.runtime.v1 import serve_pb2 as pb
    from fedsite_proto.runtime.v1 import serve_pb2_grpc as pb_grpc

    with tempfile.TemporaryDirectory(prefix="fedsite-bench-serving-") as tmp:
        work = Path(args.work or tmp)
        ml, mf = work / "train" / "alpha" / "train" / "model", work / "train" / "beta" / "train" / "model"
        lp, fp = work / "data" / "leader.csv", work / "data" / "follower.csv"
        if not (args.work and (ml / "fedsite.json").exists() and (mf / "fedsite.json").exists()):
            lp, fp = make_data(work / "data", rows, fl, ff, seed=11)
            t0 = time.perf_counter()
            train(work, lp, fp)
            print(f"trained the split-NN model in {time.perf_counter() - t0:.1f} s", flush=True)
        cfgs = configs(work / "serve", lp, fp, "bench-serving", serve={"report_every_s": 5})
        cfgs["leader"]["serve"] = {**cfgs["leader"]["serve"], "model_dir": str(ml), "api_token": TOKEN}
        cfgs["follower"]["serve"] = {**cfgs["follower"]["serve"], "model_dir": str(mf)}
        result_file = work / "serve" / "alpha" / "result.json"
        result_file.unlink(missing_ok=True)  # an earlier run's (--work)
        procs = spawn(work, "serve", cfgs)
        try:
            deadline = time.monotonic() + 180
            while not result_file.exists():
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs.values()):
                    tails = "\n".join(
                        f"--- {r}:\n" + lg.read_text(errors="replace")[-2000:] for r, (_, lg) in procs.items()
                    )
                    raise SystemExit(f"the serving runtimes did not start:\n{tails}")
                time.sleep(0.2)
            address = json.loads(result_file.read_text())["serve"]["api_address"]
            channel = grpc.insecure_channel(address)
            api = pb_grpc.ServingApiStub(channel)
            md = [("authorization", f"Bearer {TOKEN}")]
            while not api.Stats(pb.StatsRequest(), metadata=md, timeout=5).partner_connected:
                time.sleep(0.1)
            ids = [f"id{i}" for i in range(rows)]

            def fed(batch: list[str]) -> int:
                reply = api.Predict(pb.PredictRequest(ids=batch), metadata=md, timeout=10)
                return sum(1 for p in reply.predictions if p.ok)

            federated = {
                "predict_1": latency(fed, ids, 1, calls_1, 1),
                "predict_100": latency(fed, ids, 100, calls_100, 2),
                "throughput_per_s": throughput(fed, ids, args.threads, load_s),
            }
            stats = api.Stats(pb.StatsRequest(), metadata=md, timeout=5)
            channel.close()
        finally:
            for proc, _ in procs.values():
                proc.terminate()
            for proc, _ in procs.values():
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()

        # The baseline: the same two halves and the same stores, in this one process.
        from runtime.serve.model import WholeModel, configure_tf, load_half
        from runtime.serve.store import FeatureStore

        configure_tf(1)  # as the serving runtimes run it
        lh, fh = load_half(ml, "leader"), load_half(mf, "follower")
        ls = FeatureStore(work / "serve" / "alpha" / "serve" / "features.sqlite", lh.dtype, lh.width)
        fs = FeatureStore(work / "serve" / "beta" / "serve" / "features.sqlite", fh.dtype, fh.width)
        whole = WholeModel(lh, fh)

        def base(batch: list[str]) -> int:
            kl, xl = ls.get(batch)
            kf, xf = fs.get(batch)
            return len(whole.scores(xl, xf))

        baseline = {
            "predict_1": latency(base, ids, 1, calls_1, 1),
            "predict_100": latency(base, ids, 100, calls_100, 2),
            "throughput_per_s": throughput(base, ids, args.threads, load_s),
        }
    ratio = federated["throughput_per_s"] / baseline["throughput_per_s"]
    checks = {
        "predict_1_p99_under_25_ms": federated["predict_1"]["p99_ms"] < TARGETS["predict_1_p99_ms"],
        "throughput_at_least_half_the_baseline": ratio >= TARGETS["throughput_ratio"],
    }
    result = {
        "benchmark": f"split-NN serving over mutual TLS on loopback vs the whole model in one process; "
        f"{rows} ids, leader {fl} + follower {ff} features",
        "quick": args.quick,
        "command": " ".join([".venv/bin/python", "bench/serving.py", *command_args(sys.argv[1:])]),
        "load_average": os.getloadavg(),  # the machine is shared: how busy it was at the end
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **federated,
        "throughput_ratio": ratio,
        "baseline": baseline,
        "leader_stats": {"requests": stats.requests, "predictions": stats.predictions, "p99_ms": stats.p99_ms},
        "client_threads": args.threads,
        "load_s": load_s,
        "targets": TARGETS,
        "checks": checks,
    }
    table = [("", "federated", "one process", "ratio")]
    for key in ("predict_1", "predict_100"):
        for q in ("p50_ms", "p99_ms"):
            f, b = federated[key][q], baseline[key][q]
            table.append((f"{key} {q}", f"{f:.2f}", f"{b:.2f}", f"{f / b:.1f}x"))
    table.append(
        (
            "predictions/s",
            f"{federated['throughput_per_s']:,.0f}",
            f"{baseline['throughput_per_s']:,.0f}",
            f"{ratio:.2f}x",
        )
    )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
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
