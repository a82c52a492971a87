#!/usr/bin/env python
"""`make demo`: two installations on loopback through the whole main flow.

Embedded defaults (SQLite, filesystem broker, local launcher) unless
DATABASE_URL / CELERY_BROKER_URL point at PostgreSQL and Redis.
`--once` exits 0 after the summary (non-zero if the flow failed).
`--stream` plays the streaming act instead: live click and conversion events on both sides,
joined in real time by a `stream_join_train` job that publishes model versions as you watch
(with `--once`, beta stops it after `--versions` versions and the demo exits 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.flow import USERS, build_installations, prepare, run_main_flow, summary  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit after the summary instead of serving")
    parser.add_argument("--rows", type=int, default=60_000, help="rows per side of the generated data")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--psi", default="auto", choices=["auto", "ecdh", "rsa", "rr22", "kkrt"], help="PSI protocol")
    parser.add_argument("--keep", action="store_true", help="keep var/demo from the last run")
    parser.add_argument("--stream", action="store_true", help="the streaming act: live events, continual training")
    parser.add_argument("--versions", type=int, default=3, help="--stream --once: stop after this many versions")
    parser.add_argument("--rate", type=float, default=200.0, help="--stream: clicks per second")
    parser.add_argument(
        "--nats",
        action="store_true",
        help="--stream: beta's events go to a NATS JetStream subject (FEDSITE_NATS_URL, default 127.0.0.1:4222)",
    )
    args = parser.parse_args()
    if args.stream:
        return stream_act(args)

    root = ROOT / "var" / "demo"
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    alpha, beta = build_installations(
        root, database_url=os.environ.get("DATABASE_URL"), broker_url=os.environ.get("CELERY_BROKER_URL")
    )
    print(f"Setting up alpha and beta under {root} …", flush=True)
    files = prepare(alpha, beta, rows=args.rows)
    code = 1
    try:
        for inst in (alpha, beta):
            inst.start()
        for inst in (alpha, beta):
            inst.wait_ready(120)
        print(f"alpha at {alpha.url}, beta at {beta.url}: both ready", flush=True)
        result = run_main_flow(alpha, beta, files, epochs=args.epochs, psi_protocol=args.psi)
        print(summary(alpha, beta, result), flush=True)
        code = 0 if all(s == "succeeded" for s in result.statuses.values()) and result.model_version_id else 1
        if code:
            for inst in (alpha, beta):
                print(f"\n--- {inst.name} worker log (tail) ---\n" + "\n".join(inst.log("worker").splitlines()[-25:]))
        if not args.once:
            print("\nServing until Ctrl-C …", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping …")
    finally:
        for inst in (alpha, beta):
            inst.stop()
    return code


def stream_act(args: argparse.Namespace) -> int:
    """Two installations; a stream_join_train ticket on live events; versions published as they come."""
    from demo.stream import run_stream_flow

    root = ROOT / "var" / "demo-stream"
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    alpha, beta = build_installations(
        root,
        database_url=os.environ.get("DATABASE_URL"),
        broker_url=os.environ.get("CELERY_BROKER_URL"),
        db_prefix="fedsite_demo_stream",
    )
    print(f"Setting up alpha and beta under {root} …", flush=True)
    code = 1
    try:
        for inst in (alpha, beta):
            inst.setup(workspace=inst.name, users=USERS[inst.name])
            inst.start()
        for inst in (alpha, beta):
            inst.wait_ready(120)
        print(f"alpha at {alpha.url}, beta at {beta.url}: both ready (log in as alice / anna, bruno / bea)", flush=True)
        clients = (alpha.client("alice"), beta.client("bruno"), alpha.client("anna"), beta.client("bea"))
        want = args.versions if args.once else 0
        if not args.once:
            print("Events flow until Ctrl-C; watch the job on either dashboard.", flush=True)
        nats = (f"FEDSITE_DEMO_{os.getpid()}", f"fedsite-demo.{os.getpid()}.visits") if args.nats else None
        result = run_stream_flow(
            alpha,
            beta,
            clients=clients,
            versions=want,
            rate=args.rate,
            timeout_s=900 if args.once else 10**9,
            beta_nats=nats,
        )
        print(
            f"\nStream job {result.job_id}: {len(result.versions)} versions in {result.seconds:.0f}s; "
            + ", ".join(f"{side} {status}" for side, status in result.statuses.items())
            + (f"; alpha sees why: {result.errors.get('alpha')!r}" if result.errors.get("alpha") else ""),
            flush=True,
        )
        ok = len(result.versions) >= want and set(result.statuses.values()) == {"cancelled"}
        code = 0 if ok else 1
        if code:
            for inst in (alpha, beta):
                print(f"\n--- {inst.name} worker log (tail) ---\n" + "\n".join(inst.log("worker").splitlines()[-25:]))
    except KeyboardInterrupt:
        print("\nStopping …")
        code = 0
    finally:
        for inst in (alpha, beta):
            inst.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
