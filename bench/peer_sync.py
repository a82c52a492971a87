"""Peer sync benchmark: how fast a decision on one installation shows on the other.

    .venv/bin/python bench/peer_sync.py            # 100 tickets
    .venv/bin/python bench/peer_sync.py --quick    # 20 tickets, well within a minute
    .venv/bin/python bench/peer_sync.py --tickets 300 --broker filesystem

Starts two real installations on loopback (gunicorn, `manage.py run_peer`,
`celery worker -B` each; PostgreSQL databases and Redis by default), partners
them through the invitation API, and shares a dataset. Then, ticket by ticket:

- propose → pending: Alpha's POST /tickets/ until Beta's API shows it pending;
- approve → visible: Beta's POST /tickets/{id}/approve/ until Alpha's API shows
  its copy approved (the figure the goal is about: p95 < 1 s; Fedlearner's
  console polls every 60 s).

Both clocks start before the HTTP request, and each side is polled through its
REST API every 10 ms, so the figures include the API round trips, the commit,
the Celery push, the gRPC call with mutual TLS and signature checks, and the
receiver's transaction. Approved tickets start jobs on both sides, so workers
are busy while we measure:

- `--jobs refuse` (default): the launcher refuses to start runtimes (no runtime
  port is configured), so each job fails at once and the two sides exchange
  their `job.state` messages. This measures the control plane alone, as it
  behaves on a machine whose runtimes run elsewhere (pods).
- `--jobs run`: real PSI runtimes start on this machine for every approved
  ticket (the local launcher runs them at `FEDSITE_LOCAL_RUNTIME_NICE`, so the
  installation keeps the CPU it needs); written under `with_jobs_running`.

Writes `bench/results/peer_sync.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsite.localcluster import (  # noqa: E402
    ApiClient,
    Installation,
    drop_postgres_database,
    ensure_postgres_database,
)

RESULTS = ROOT / "bench" / "results" / "peer_sync.json"
PG = os.environ.get("FEDSITE_BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("FEDSITE_BENCH_REDIS", "redis://127.0.0.1:6379")
POLL_S = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_status(api: ApiClient, path: str, statuses: set[str], timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.request("GET", path)
        if r.status_code == 200 and r.json()["status"] in statuses:
            return time.monotonic()
        time.sleep(POLL_S)
    raise TimeoutError(f"{path} did not reach {statuses} in {timeout}s")


def installation(name: str, tmp: Path, tag: str, args: argparse.Namespace, redis_db: int) -> Installation:
    data = tmp / name / "data"
    folder = data / {"alpha": "acme", "beta": "globex"}[name]  # the workspace's own data folder
    folder.mkdir(parents=True)
    (folder / "features.csv").write_text("user_id,age\n" + "".join(f"u{i},{i % 70}\n" for i in range(100)))
    (folder / "labels.csv").write_text("user_id,clicked\n" + "".join(f"u{i},{i % 2}\n" for i in range(0, 200, 2)))
    db = f"fedsite_bench_{name}_{tag}"
    jobs = args.jobs
    return Installation(
        name=f"{name}-bench{tag}",
        var_dir=tmp / name / "var",
        database_url=ensure_postgres_database(PG, db, fresh=True) if args.database == "postgresql" else None,
        broker_url=f"{REDIS}/{redis_db}" if args.broker == "redis" else None,
        data_roots=[data],
        worker_concurrency=4,
        # "0" is not a port range: the launcher refuses (LaunchError) and the job fails cleanly.
        extra_env={"LOG_LEVEL": "WARNING", "FEDSITE_RUNTIME_PORTS": "37000-37999" if jobs == "run" else "0"},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 tickets")
    parser.add_argument("--tickets", type=int, default=None)
    parser.add_argument("--broker", choices=("redis", "filesystem"), default="redis")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--jobs", choices=("refuse", "run"), default="refuse", help="see above")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep", action="store_true", help="keep the installations' var dirs (logs)")
    args = parser.parse_args()
    n = args.tickets or (20 if args.quick else 100)
    tag = str(os.getpid())
    base = 2 + (os.getpid() % 7) * 2
    tmp = Path(tempfile.mkdtemp(prefix="fedsite-peer-bench-"))
    alpha = installation("alpha", tmp, tag, args, base)
    beta = installation("beta", tmp, tag, args, base + 1)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(
                    lambda: (
                        alpha.setup(workspace="acme", users={"alice": ("owner", "alice-bench-pw")}),
                        alpha.start(),
                        alpha.wait_ready(90),
                    )
                ),  # fmt: skip
                pool.submit(
                    lambda: (
                        beta.setup(workspace="globex", users={"bob": ("owner", "bob-bench-pw")}),
                        beta.start(),
                        beta.wait_ready(90),
                    )
                ),  # fmt: skip
            ]
            for job in jobs:
                job.result()
        a, b = alpha.client("alice"), beta.client("bob")
        A, B = "/api/v1/workspaces/acme/", "/api/v1/workspaces/globex/"
        time.sleep(1)  # run_peer has no readiness URL; it listens within a second of start
        code = a.post(A + "partners/invitations/")["code"]
        b_partner = b.post(B + "partners/accept/", {"code": code, "name": "alpha"})
        a_partner = a.wait_for(A + "partners/", lambda x: x["count"] == 1)["results"][0]
        labels = a.post(A + "datasets/", {"name": "labels", "uri": "labels.csv", "id_column": "user_id",
                                          "label_column": "clicked"})  # fmt: skip
        features = b.post(B + "datasets/", {"name": "features", "uri": "features.csv", "id_column": "user_id"})
        b.post(B + f"datasets/{features['id']}/grants/", {"partner": b_partner["id"]})
        remote = a.wait_for(A + "partner-datasets/", lambda x: x["count"] == 1)["results"][0]
        setup_s = time.monotonic() - started

        propose_s: list[float] = []
        ids: list[str] = []
        for i in range(n):
            t0 = time.monotonic()
            t = a.post(A + "tickets/", {"partner": a_partner["id"], "kind": "psi", "local_dataset": labels["id"],
                                        "remote_dataset": remote["id"], "name": f"bench {i}"})  # fmt: skip
            propose_s.append(wait_status(b, B + f"tickets/{t['id']}/", {"pending"}) - t0)
            ids.append(t["id"])
        approve_s: list[float] = []
        api_s: list[float] = []
        for tid in ids:
            t0 = time.monotonic()
            b.post(B + f"tickets/{tid}/approve/", {"comment": "bench"})
            api_s.append(time.monotonic() - t0)
            approve_s.append(
                wait_status(a, A + f"tickets/{tid}/", {"approved", "running", "succeeded", "failed", "cancelled"}) - t0
            )
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda inst: inst.stop(), (alpha, beta)))
        for name in ("alpha", "beta"):
            if args.database == "postgresql":
                drop_postgres_database(PG, f"fedsite_bench_{name}_{tag}")
        if args.keep:
            print(f"logs kept under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("propose → pending (alpha → beta)", propose_s),
        ("approve → visible (beta → alpha)", approve_s),
        ("  of which beta's approve API call", api_s),
    ]
    print(
        f"\npeer sync over {n} tickets, database={args.database}, broker={args.broker}, jobs={args.jobs}, "
        f"setup {setup_s:.1f} s"
    )
    print(f"{'measure':<38} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8} {'mean s':>8}")
    for label, values in rows:
        print(f"{label:<38} {len(values):>4} {percentile(values, 0.5):>8.3f} {percentile(values, 0.95):>8.3f} "
              f"{max(values):>8.3f} {statistics.fmean(values):>8.3f}")  # fmt: skip
    goal = percentile(approve_s, 0.95) < 1.0
    print(f"goal p95 < 1 s: {'met' if goal else 'NOT met'} (Fedlearner's console polls every 60 s)")
    result: dict[str, Any] = {
        "approve_to_visible_p50_s": round(percentile(approve_s, 0.5), 4),
        "approve_to_visible_p95_s": round(percentile(approve_s, 0.95), 4),
        "approve_to_visible_max_s": round(max(approve_s), 4),
        "propose_to_pending_p50_s": round(percentile(propose_s, 0.5), 4),
        "propose_to_pending_p95_s": round(percentile(propose_s, 0.95), 4),
        "approve_api_p50_s": round(percentile(api_s, 0.5), 4),
        "tickets": n,
        "broker": args.broker,
        "jobs": args.jobs,
        "database": args.database,
        "quick": args.quick,
        "goal_p95_under_1s": goal,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous = json.loads(out.read_text()) if out.exists() else {}
    except ValueError:
        previous = {}
    # The top-level figures are the control plane's (--jobs refuse); a --jobs run result sits
    # beside them under "with_jobs_running", and each kind of run keeps the other's last figures.
    if args.jobs == "run":
        result = {**{k: v for k, v in previous.items() if k != "with_jobs_running"}, "with_jobs_running": result}
    elif "with_jobs_running" in previous:
        result["with_jobs_running"] = previous["with_jobs_running"]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
