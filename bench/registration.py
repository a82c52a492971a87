"""Dataset registration benchmark: how fast a CSV is inspected, beside the row-by-row reader.

    .venv/bin/python bench/registration.py            # 1M rows (about 45 MB)
    .venv/bin/python bench/registration.py --quick    # 200k rows
    .venv/bin/python bench/registration.py --rows 10000000

Writes a seeded CSV (an id, a binary label, floats, integers and a small text
category), then times `inspect_csv` (Arrow's streaming reader, statistics a batch
at a time) and, as the baseline in the same run, `inspect_csv_rows` (Python's csv
module, one value at a time), checks that both give the same result, and
measures each one's peak memory in a fresh process. Writes
`bench/results/registration.json` with `fast.mb_per_s`, `rows.mb_per_s` and
`speedup`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fedsite.settings")
RESULTS = ROOT / "bench" / "results" / "registration.json"


def make_csv(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with path.open("w") as fh:
        fh.write("id,label,f1,f2,f3,f4,cat\n")
        for i in range(rows):
            fh.write(f"user-{i:09d},{i & 1},{rng.random():.6f},{i % 97},{rng.gauss(0, 1):.4f},{i % 13},c{i % 5}\n")


def child(reader: str, path: str) -> None:
    """One timed inspection in a fresh process; prints seconds, peak RSS and the result's digest."""
    import django

    django.setup()
    from apps.datasets import inspect

    fn = inspect.inspect_csv if reader == "fast" else inspect.inspect_csv_rows
    fn(Path(path).with_name("warm.csv"), "id", "label")  # imports and first-call costs are not the file's
    t0 = time.perf_counter()
    info = fn(Path(path), "id", "label")
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = json.dumps([info.schema, info.row_count, info.stats, info.checksum], sort_keys=True, default=str)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "digest": digest}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    folder = Path(tempfile.mkdtemp(prefix="fedsite-inspect-bench-"))
    path = folder / "data.csv"
    make_csv(path, rows)
    make_csv(folder / "warm.csv", 100)
    mb = path.stat().st_size / 1e6
    runs = {}
    for reader in ("fast", "rows"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", reader, str(path)], cwd=ROOT, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise SystemExit(f"{reader} failed:\n{out.stderr[-3000:]}")
        runs[reader] = json.loads(out.stdout.strip().splitlines()[-1])
    same = runs["fast"].pop("digest") == runs["rows"].pop("digest")
    result = {
        "rows": rows,
        "file_mb": round(mb, 1),
        "fast": {
            "seconds": round(runs["fast"]["seconds"], 2),
            "mb_per_s": round(mb / runs["fast"]["seconds"], 1),
            "peak_rss_mb": round(runs["fast"]["peak_rss_mb"], 1),
        },
        "rows_baseline": {
            "seconds": round(runs["rows"]["seconds"], 2),
            "mb_per_s": round(mb / runs["rows"]["seconds"], 1),
            "peak_rss_mb": round(runs["rows"]["peak_rss_mb"], 1),
        },
        "speedup": round(runs["rows"]["seconds"] / runs["fast"]["seconds"], 2),
        "same_result": same,
        "command": f".venv/bin/python bench/registration.py{' --quick' if args.quick else ''}",
    }
    print(f"\nCSV inspection, {rows:,} rows ({mb:.1f} MB), both readers in fresh processes")
    print(f"{'reader':<34}{'seconds':>10}{'MB/s':>10}{'peak RSS MB':>14}")
    for label, key in (
        ("fast (Arrow, a batch at a time)", "fast"),
        ("baseline (csv module, row by row)", "rows_baseline"),
    ):
        r = result[key]
        print(f"{label:<34}{r['seconds']:>10.2f}{r['mb_per_s']:>10.1f}{r['peak_rss_mb']:>14.1f}")
    print(f"speed-up {result['speedup']}x; same result: {same}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
