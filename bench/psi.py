"""PSI benchmark: two runtime processes on this machine, mTLS on loopback.

    .venv/bin/python bench/psi.py            # 100k and 1M ids per side
    .venv/bin/python bench/psi.py --quick    # 100k only
    .venv/bin/python bench/psi.py --sizes 10000000 --protocols ecdh

Each run starts the leader and the follower as ``python -m runtime psi`` with
half of the ids in common, and measures wall time from start to both exits (so
process start, reading the CSV, the exchange and writing aligned.csv all count)
and each side's peak resident memory (the runtime plus its pool workers, sampled
from /proc). The baseline is Fedlearner's RSA signing measured in the same run:
gmpy2 ``powmod`` with the full private exponent and no CRT, the leader signing
its own ids and the follower's blinded ids, per process. Writes
``bench/results/psi.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from runtime.psi import crypto  # noqa: E402
from tests.pki import make_party, tls_config  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
RESULTS = ROOT / "bench" / "results" / "psi.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in kB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                stack.extend(int(k) for k in kids)
        except (OSError, ValueError):
            continue
    return total


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_figures(n: int, cpu_s: float) -> dict[str, Any]:
    """CPU seconds of both parties (all their processes) and the rate if they had this machine's cores to themselves."""
    cores = os.cpu_count() or 1
    return {
        "cpu_seconds": round(cpu_s, 2),
        "cpu_bound_items_per_s_per_side": round(n / (cpu_s / cores)) if cpu_s else None,
    }


def make_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    a, b = folder / f"leader-{n}.csv", folder / f"follower-{n}.csv"
    if a.exists() and b.exists():
        return a, b
    rng = random.Random(n)
    left = list(range(n))
    right = list(range(n // 2, n + n // 2))
    rng.shuffle(left)
    rng.shuffle(right)
    with a.open("w") as f:
        f.write("id,label\n")
        f.writelines(f"user-{i:09d},{i & 1}\n" for i in left)
    with b.open("w") as f:
        f.write("id,f1,f2\n")
        f.writelines(f"user-{i:09d},{i % 97},{(i * 7) % 13}\n" for i in right)
    return a, b


def run_pair(folder: Path, parties, n: int, protocol: str, psi_params: dict[str, Any]) -> dict[str, Any]:
    a, b = make_inputs(folder, n)
    port = free_port()
    alpha, beta = parties
    procs = {}
    peaks = {"leader": 0, "follower": 0}
    cpu0 = children_cpu_s()
    t0 = time.monotonic()
    for role, me, peer, data in (("leader", alpha, beta, a), ("follower", beta, alpha, b)):
        cfg = {
            "job_id": f"bench-{protocol}-{n}",
            "role": role,
            "listen_address": f"127.0.0.1:{port}",
            "peer_address": f"127.0.0.1:{port}",
            "tls": tls_config(me, peer),
            "data": {"path": str(data), "id_column": "id"},
            "output_dir": str(folder / f"out-{protocol}-{n}" / role),
            "psi": psi_params,
            "timeout_s": 7200,
        }
        path = folder / f"{role}-{protocol}-{n}.json"
        path.write_text(json.dumps(cfg))
        procs[role] = subprocess.Popen(
            [PY, "-m", "runtime", "psi", "--config", str(path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for role, p in procs.items():
                if p.poll() is None:
                    peaks[role] = max(peaks[role], tree_rss_kb(p.pid))
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    errs = {role: p.communicate()[1] for role, p in procs.items()}
    seconds = time.monotonic() - t0
    stop.set()
    th.join()
    for role, p in procs.items():
        if p.returncode != 0:
            raise SystemExit(f"{protocol} {n}: {role} failed:\n{errs[role][-3000:]}")
    stats = {
        role: json.loads((folder / f"out-{protocol}-{n}" / role / "psi" / "stats.json").read_text()) for role in procs
    }
    assert stats["leader"]["intersection_size"] == n - n // 2 == stats["follower"]["intersection_size"]
    return {
        "n_per_side": n,
        "seconds": round(seconds, 2),
        "items_per_s_per_side": round(n / seconds),
        "intersection_size": stats["leader"]["intersection_size"],
        "peak_rss_mb": {role: round(kb / 1024, 1) for role, kb in peaks.items()},
        **cpu_figures(n, children_cpu_s() - cpu0),
        "engine": stats["leader"]["engine"],
        "suite": stats["leader"].get("suite"),
        "x25519": stats["leader"].get("x25519"),
    }


ENGINE_ROWS = {
    # result key: (psi params of the job, libpsi protocol for the direct call)
    "ecdh": ({"protocol": "ecdh", "engine": "builtin"}, None),
    "rsa": ({"protocol": "rsa", "engine": "builtin"}, None),
    "libpsi_rr22": ({"protocol": "rr22", "engine": "libpsi"}, "rr22"),
    "libpsi_kkrt": ({"protocol": "kkrt", "engine": "libpsi"}, "kkrt"),
    "libpsi_ecdh": ({"protocol": "ecdh", "engine": "libpsi"}, "ecdh"),
}


def direct_child(spec_path: str) -> None:
    """One side of libpsi called directly: plaintext brpc link, same files, no Fedsite code around it."""
    spec = json.loads(Path(spec_path).read_text())
    from spu import psi
    from spu.libspu import link

    desc = link.Desc()
    desc.id = spec["job_id"]
    for name, addr in spec["parties"]:
        desc.add_party(name, addr)
    desc.connect_retry_times = 200
    desc.connect_retry_interval_ms = 100
    ctx = link.create_brpc(desc, spec["rank"])
    proto = {
        "rr22": psi.PsiProtocol.PROTOCOL_RR22,
        "kkrt": psi.PsiProtocol.PROTOCOL_KKRT,
        "ecdh": psi.PsiProtocol.PROTOCOL_ECDH,
    }[spec["protocol"]]
    pconf = psi.PsiProtocolConfig(protocol=proto, receiver_rank=0, broadcast_result=True)
    if spec["protocol"] == "ecdh":
        pconf.ecdh_params = psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519, batch_size=4096)
    conf = psi.PsiExecuteConfig(
        protocol_conf=pconf,
        input_params=psi.InputParams(path=spec["input"], selected_keys=["id"], keys_unique=False),
        output_params=psi.OutputParams(path=spec["output"], disable_alignment=False),
    )
    rep = psi.psi_execute(conf, ctx)
    Path(spec["output"] + ".json").write_text(json.dumps({"intersection": rep.intersection_count}))
    os._exit(0)  # skip brpc's teardown, as the runtime does


def run_direct(folder: Path, n: int, protocol: str) -> dict[str, Any]:
    a, b = make_inputs(folder, n)
    ports = [free_port(), free_port()]
    parties = [["leader", f"127.0.0.1:{ports[0]}"], ["follower", f"127.0.0.1:{ports[1]}"]]
    procs = []
    cpu0 = children_cpu_s()
    t0 = time.monotonic()
    for rank, data in enumerate((a, b)):
        spec = {
            "job_id": f"direct-{protocol}-{n}",
            "parties": parties,
            "rank": rank,
            "protocol": protocol,
            "input": str(data),
            "output": str(folder / f"direct-{protocol}-{n}-{rank}.csv"),
        }
        path = folder / f"direct-{protocol}-{n}-{rank}.json"
        path.write_text(json.dumps(spec))
        procs.append(
            subprocess.Popen(
                [PY, str(Path(__file__).resolve()), "--direct-child", str(path)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errs = [p.communicate()[1] for p in procs]
    seconds = time.monotonic() - t0
    for p, err in zip(procs, errs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"libpsi direct {protocol} {n} failed:\n{err[-3000:]}")
    inter = json.loads(Path(str(folder / f"direct-{protocol}-{n}-0.csv") + ".json").read_text())["intersection"]
    assert inter == n - n // 2
    return {
        "n_per_side": n,
        "seconds": round(seconds, 2),
        "items_per_s_per_side": round(n / seconds),
        "intersection_size": inter,
        **cpu_figures(n, children_cpu_s() - cpu0),
    }


def baseline_fedlearner_rsa(bits: int = 2048, samples: int = 200) -> dict[str, Any]:
    """Fedlearner's leader work per id pair: two full-exponent signatures (own id, follower's blinded id)."""
    key = crypto.new_rsa_key(bits, 2)
    ids = [f"user-{i:09d}" for i in range(samples)]
    t0 = time.process_time()
    crypto.fedlearner_sign_own(key, ids)
    per_sign = (time.process_time() - t0) / samples
    return {
        "items_per_s_per_side": round(1 / (2 * per_sign)),
        "seconds_per_signature": round(per_sign, 6),
        "method": f"gmpy2.powmod(m, d, n), full {bits}-bit exponent, no CRT, one process (CPU time, so not slowed by other load); the leader signs 2 values per id pair (the follower's blinding is not counted, in the baseline's favour)",
    }


def _cpu_per_item(fn, count: int) -> float:
    """CPU seconds per item of fn() over `count` items, best of three (this process, one core)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn()
        best = min(best, (time.process_time() - t0) / count)
    return best


def hardware_ceiling(samples: int = 4000) -> dict[str, Any]:
    """What this machine allows at most, measured in the same run as the jobs.

    The cryptography alone, nothing else (no reading, transport, checkpoint or join),
    with every core busy and both parties sharing them:
      ECDH: each side does H(id) for its own ids and 2 X25519 per id (its own and the partner's);
      RSA:  the leader does 2 private operations per id pair (its own id and the follower's
            blinded id), the follower blinds and unblinds.
    """
    cores = os.cpu_count() or 1
    ids = [f"user-{i:09d}" for i in range(samples)]
    key = crypto.new_ecdh_key()
    points = crypto.ecdh_encrypt_ids(key, ids)
    x_openssl = _cpu_per_item(lambda: crypto.x25519_many(key, points, backend="cryptography"), samples)
    x_used = _cpu_per_item(lambda: crypto.x25519_many(key, points), samples)
    h2c = _cpu_per_item(lambda: crypto.ecdh_encrypt_ids(key, ids), samples) - x_used
    rsa_key = crypto.new_rsa_key(2048, 3)
    few = ids[: max(200, samples // 20)]
    sign = _cpu_per_item(lambda: crypto.rsa_sign_own(rsa_key, few), len(few))
    pub = crypto.rsa_public(rsa_key)
    blinded, unblind = crypto.rsa_blind(pub, few)
    sigs = crypto.rsa_sign_blinded(rsa_key, blinded)
    follower = _cpu_per_item(lambda: crypto.rsa_blind(pub, few), len(few)) + _cpu_per_item(
        lambda: crypto.rsa_unblind(pub, sigs, unblind), len(few)
    )
    return {
        "cores": cores,
        "x25519_ops_per_s_per_core": {"cryptography": round(1 / x_openssl), crypto.x25519_backend(): round(1 / x_used)},
        "hash_to_curve_us_per_id": round(h2c * 1e6, 2),
        "rsa2048_3p_private_ops_per_s_per_core": round(1 / sign),
        "rsa_follower_us_per_id": round(follower * 1e6, 1),
        # items/s per side if the cores did nothing but this arithmetic, both parties sharing them
        "ecdh_scalar_mult_only_items_per_s_per_side": round(cores / (4 * x_used)),
        "ecdh_items_per_s_per_side": round(cores / (2 * (2 * x_used + h2c))),
        "rsa_items_per_s_per_side": round(cores / (2 * sign + follower)),
    }


def save(result: dict[str, Any]) -> None:
    """Merge into bench/results/psi.json (rows not run this time keep their last figures)."""
    if "rsa" in result:
        base = result["baseline_fedlearner_rsa"]["items_per_s_per_side"]
        result["rsa"]["speedup_vs_baseline"] = round(result["rsa"]["items_per_s_per_side"] / base, 2)
        cb = result["rsa"]["runs"][-1].get("cpu_bound_items_per_s_per_side")
        if cb:
            result["rsa"]["cpu_bound_speedup_vs_baseline"] = round(cb / base, 2)
    peaks = [
        max(r["peak_rss_mb"].values())
        for k, v in result.items()
        if isinstance(v, dict)
        for r in v.get("runs", [])
        if "peak_rss_mb" in r
    ]
    if peaks:
        result["memory"] = {"peak_rss_mb_per_side": max(peaks)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            old = json.loads(RESULTS.read_text())
        except ValueError:
            old = {}
    old.update(result)
    RESULTS.write_text(json.dumps(old, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k ids per side only")
    ap.add_argument("--sizes", type=int, nargs="*", help="ids per side (default 100000 1000000)")
    ap.add_argument(
        "--protocols", nargs="*", default=list(ENGINE_ROWS), help=f"rows to run (default: {' '.join(ENGINE_ROWS)})"
    )
    ap.add_argument(
        "--max-size", nargs="*", default=[], metavar="ROW=N", help="cap the sizes of a row, e.g. libpsi_ecdh=100000"
    )
    ap.add_argument("--direct-child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (default: a temp folder)")
    args = ap.parse_args()
    if args.direct_child:
        direct_child(args.direct_child)
        return
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="fedsite-psi-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    parties = (make_party(folder / "pki", "alpha"), make_party(folder / "pki", "beta"))

    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "sizes": sizes,
        "note": "both parties on this machine; items/s per side = ids per side / wall seconds of the whole job",
    }
    caps = {k: int(v) for k, v in (x.split("=", 1) for x in args.max_size)}
    rows = []
    base = baseline_fedlearner_rsa()
    result["baseline_fedlearner_rsa"] = base
    ceiling = hardware_ceiling()
    result["hardware_ceiling"] = ceiling
    save(result)
    for key in args.protocols:
        psi_params, direct = ENGINE_ROWS[key]
        runs, druns = [], []
        for n in sizes:
            if n > caps.get(key, n):
                continue
            r = run_pair(folder, parties, n, key, psi_params)
            runs.append(r)
            rows.append((key, n, r))
            peak = max(r["peak_rss_mb"].values())
            print(
                f"  {key:22s} {n:>9,d}: {r['seconds']:8.2f}s {r['items_per_s_per_side']:>9,d} items/s/side  peak {peak:7.1f} MB",
                flush=True,
            )
            if direct:
                d = run_direct(folder, n, direct)
                druns.append(d)
                rows.append((f"libpsi_direct_{direct}", n, d))
                print(
                    f"  {'libpsi_direct_' + direct:22s} {n:>9,d}: {d['seconds']:8.2f}s {d['items_per_s_per_side']:>9,d} items/s/side",
                    flush=True,
                )
        top = runs[-1]
        result[key] = {
            "items_per_s_per_side": top["items_per_s_per_side"],
            "n_per_side": top["n_per_side"],
            "runs": runs,
        }
        if key in ("ecdh", "rsa"):
            cap = ceiling[f"{key}_items_per_s_per_side"]
            result[key]["hardware_ceiling_items_per_s_per_side"] = cap
            result[key]["share_of_ceiling"] = round(top["items_per_s_per_side"] / cap, 3)
        if direct:
            dtop = druns[-1]
            result[f"libpsi_direct_{direct}"] = {
                "items_per_s_per_side": dtop["items_per_s_per_side"],
                "n_per_side": dtop["n_per_side"],
                "runs": druns,
            }
            result[key]["ratio_to_direct"] = round(top["items_per_s_per_side"] / dtop["items_per_s_per_side"], 3)
        save(result)
    peaks = [max(r["peak_rss_mb"].values()) for _, _, r in rows if "peak_rss_mb" in r]
    result["memory"] = {"peak_rss_mb_per_side": max(peaks) if peaks else None}
    if "rsa" in result:
        result["rsa"]["speedup_vs_baseline"] = round(
            result["rsa"]["items_per_s_per_side"] / base["items_per_s_per_side"], 2
        )

    print()
    print(
        f"{'protocol':<26}{'ids/side':>11}{'seconds':>10}{'items/s/side':>14}{'cpu-bound/side':>16}{'peak MB/side':>14}"
    )
    for protocol, n, r in rows:
        peak = f"{max(r['peak_rss_mb'].values()):>14.1f}" if "peak_rss_mb" in r else f"{'-':>14}"
        cb = r.get("cpu_bound_items_per_s_per_side") or 0
        print(f"{protocol:<26}{n:>11,d}{r['seconds']:>10.2f}{r['items_per_s_per_side']:>14,d}{cb:>16,d}{peak}")
    print(f"{'baseline_fedlearner_rsa':<26}{'':>11}{'':>10}{base['items_per_s_per_side']:>14,d}{'':>16}{'':>14}")
    if "rsa" in result:
        print(f"RSA speed-up over the Fedlearner baseline: {result['rsa']['speedup_vs_baseline']}x")
    print()
    xs = ", ".join(f"{k} {v:,d}" for k, v in ceiling["x25519_ops_per_s_per_core"].items())
    print(
        f"Hardware ceiling, measured in this run ({ceiling['cores']} cores shared by both parties, arithmetic only):\n"
        f"  X25519 ops/s per core: {xs}; hash to curve {ceiling['hash_to_curve_us_per_id']} us/id;"
        f" RSA-2048 (3 primes, CRT) private ops/s per core: {ceiling['rsa2048_3p_private_ops_per_s_per_core']:,d}"
    )
    print(f"{'protocol':<26}{'ceiling items/s/side':>22}{'measured (largest n)':>22}{'share':>8}")
    for key in ("ecdh", "rsa"):
        if key in result and "hardware_ceiling_items_per_s_per_side" in result[key]:
            r = result[key]
            print(
                f"{key:<26}{r['hardware_ceiling_items_per_s_per_side']:>22,d}{r['items_per_s_per_side']:>22,d}{r['share_of_ceiling']:>8.0%}"
            )
    print(
        f"  (ECDH with scalar multiplications only, no hashing: {ceiling['ecdh_scalar_mult_only_items_per_s_per_side']:,d})"
    )
    for key in ("libpsi_rr22", "libpsi_kkrt", "libpsi_ecdh"):
        if "ratio_to_direct" in result.get(key, {}):
            print(f"{key}: Fedsite job path / libpsi called directly = {result[key]['ratio_to_direct']}")

    save(result)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
