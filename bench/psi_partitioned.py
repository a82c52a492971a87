"""Partitioned PSI benchmark: P = 2 partition pairs against one pair (P = 1), same files, same run.

    .venv/bin/python bench/psi_partitioned.py                 # 1M ids per side, RR22 (libpsi)
    .venv/bin/python bench/psi_partitioned.py --size 100000 --protocol ecdh

Each side runs P runtime processes (``python -m runtime psi``), partition i of the
leader paired with partition i of the follower over mutual TLS on loopback, as the
local launcher runs them. Wall time from the first start to the last exit (process
start, each worker's scan of the whole input for its share, the PSI, the merge of
the parts into one aligned.csv); peak memory per side is the sum over its
processes. The P = 1 baseline is measured in the same run on the same files, and
the merged outputs of P = 1 and P = 2 must be byte-identical.

On a 2-core machine the two pairs share the same two cores as the single pair, so
this shows the overhead of partitioning, not a speed-up: partitions pay off when
each pair gets its own machine (pods on several nodes).

Merges its key ``partitioned`` into ``bench/results/psi.json`` (other keys kept).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pki import make_party, tls_config  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
RESULTS = ROOT / "bench" / "results" / "psi.json"
KEY = "partitioned"


def port_base(count: int) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        socks = []
        try:
            for i in range(count):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise SystemExit("no free port range")


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in kB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(k) for k in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def make_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    """Half of the ids in common, shuffled; the same shapes as bench/psi.py."""
    a, b = folder / f"leader-{n}.csv", folder / f"follower-{n}.csv"
    if a.exists() and b.exists():
        return a, b
    rng = random.Random(n)
    left, right = list(range(n)), list(range(n // 2, n + n // 2))
    rng.shuffle(left)
    rng.shuffle(right)
    with a.open("w") as f:
        f.write("id,label\n")
        f.writelines(f"user-{i:09d},{i & 1}\n" for i in left)
    with b.open("w") as f:
        f.write("id,f1,f2\n")
        f.writelines(f"user-{i:09d},{i % 97},{(i * 7) % 13}\n" for i in right)
    return a, b


def run(folder: Path, parties: Any, n: int, count: int, psi: dict[str, Any]) -> dict[str, Any]:
    a, b = make_inputs(folder, n)
    port = port_base(count)
    alpha, beta = parties
    out = folder / f"out-p{count}"
    procs: list[tuple[str, subprocess.Popen]] = []
    peaks = {"leader": 0, "follower": 0}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    for i in range(count):
        for role, me, peer, data in (("leader", alpha, beta, a), ("follower", beta, alpha, b)):
            params = {**psi, "partitions": count}
            if count > 1:
                params["partition"] = {"index": i, "ports": "offset"} | ({"key": "42" * 32} if role == "leader" else {})
            cfg = {
                "job_id": f"bench-partitioned-{n}-{count}",
                "role": role,
                "listen_address": f"127.0.0.1:{port}",
                "peer_address": f"127.0.0.1:{port}",
                "tls": tls_config(me, peer),
                "data": {"path": str(data), "id_column": "id"},
                "output_dir": str(out / role),
                "psi": params,
                "timeout_s": 3600,
            }
            path = folder / f"{role}-p{count}-{i}.json"
            path.write_text(json.dumps(cfg))
            cmd = [PY, "-m", "runtime", "psi", "--config", str(path)]
            procs.append((role, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = {"leader": 0, "follower": 0}
            for role, p in procs:
                if p.poll() is None:
                    now[role] += rss_kb(p.pid)
            for role in now:
                peaks[role] = max(peaks[role], now[role])
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    errors = [(role, p.communicate()[1]) for role, p in procs]
    seconds = time.monotonic() - t0
    stop.set()
    th.join()
    for (role, p), (_, err) in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"P={count}: a {role} partition failed:\n{err.decode(errors='replace')[-3000:]}")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    stats = json.loads((out / "leader" / "psi" / "stats.json").read_text())
    assert stats["intersection_size"] == n - n // 2, stats
    return {
        "partitions": count,
        "n_per_side": n,
        "seconds": round(seconds, 2),
        "items_per_s_per_side": round(n / seconds),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": {role: round(kb / 1024, 1) for role, kb in peaks.items()},
        "engine": stats.get("engine"),
        "protocol": stats.get("protocol"),
        "aligned": str(out / "leader" / "psi" / "aligned.csv"),
    }


def save(row: dict[str, Any]) -> None:
    """Merge our key into bench/results/psi.json; the other rows (bench/psi.py's) stay as they are."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    except ValueError:
        data = {}
    data[KEY] = row
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="ids per side (default 1M)")
    ap.add_argument("--protocol", default="rr22", choices=["rr22", "kkrt", "ecdh", "rsa"])
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    engine = "libpsi" if args.protocol in ("rr22", "kkrt") else "builtin"
    psi = {"protocol": args.protocol, "engine": engine}
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="psi-partitioned-") as tmp:
        folder = Path(tmp)
        parties = (make_party(folder / "pki", "alpha"), make_party(folder / "pki", "beta"))
        base = run(folder, parties, args.size, 1, psi)
        part = run(folder, parties, args.size, args.partitions, psi)
        same = Path(base.pop("aligned")).read_bytes() == Path(part.pop("aligned")).read_bytes()
    if not same:
        raise SystemExit("the partitioned output differs from the single pair's")
    ratio = part["items_per_s_per_side"] / base["items_per_s_per_side"]
    print(f"PSI {args.protocol} ({engine}), {args.size:,} ids per side, {cores} cores; same merged output: {same}")
    print(f"{'run':<24}{'items/s/side':>14}{'seconds':>10}{'CPU s':>9}{'peak MB L/F':>16}")
    for name, r in (("P = 1 (baseline)", base), (f"P = {args.partitions}", part)):
        peak = f"{r['peak_rss_mb']['leader']:.0f}/{r['peak_rss_mb']['follower']:.0f}"
        print(f"{name:<24}{r['items_per_s_per_side']:>14,}{r['seconds']:>10}{r['cpu_seconds']:>9}{peak:>16}")
    print(f"ratio P={args.partitions} / P=1: {ratio:.2f}x")
    note = (
        f"P={args.partitions} pairs share this machine's {cores} cores with each other: this shows the overhead of "
        "partitioning (each worker scans the whole input for its share; the parts are merged at the end), "
        "not a speed-up; partitions pay off when each pair gets its own machine"
    )
    print(f"note: {note}")
    if not args.no_save:
        save(
            {
                "items_per_s_per_side": part["items_per_s_per_side"],
                "partitions": args.partitions,
                "n_per_side": args.size,
                "protocol": args.protocol,
                "engine": engine,
                "p1_items_per_s_per_side": base["items_per_s_per_side"],
                "ratio_to_p1": round(ratio, 2),
                "cores": cores,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "runs": [base, part],
                "identical_output": same,
                "note": note,
            }
        )
        print(f"merged key {KEY!r} into {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
