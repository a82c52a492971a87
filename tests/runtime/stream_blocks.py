"""Committed data blocks as the stream join writes them (the contract runtime/stream/train.py reads).

`{output_dir}/stream/blocks/{seq:08d}.parquet` holds `example_id`, `event_time`, then that side's
columns (the leader's include the label); `{seq:08d}.json` is the manifest, written atomically and
only once the block is committed on both sides. Both sides hold the same blocks in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


def events(n: int, seed: int, start: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Matched leader (click + label) and follower (advertiser) halves of `n` examples; the label needs both."""
    rng = np.random.default_rng([seed, start])
    xl = rng.normal(size=(n, 2))
    xf = rng.normal(size=(n, 2))
    cf = rng.choice(["x", "y", "z"], size=n)
    z = 1.5 * xl[:, 0] - 1.0 * xl[:, 1] + 1.4 * xf[:, 0] + 0.8 * xf[:, 1] - 0.9 * (cf == "x")
    y = (rng.random(n) < 1 / (1 + np.exp(-1.6 * z))).astype(int)
    ids = [f"c{start + i:07d}" for i in range(n)]
    t = 1_700_000_000.0 + np.arange(start, start + n, dtype=float)
    leader = pd.DataFrame({"example_id": ids, "event_time": t, "l0": xl[:, 0], "l1": xl[:, 1], "label": y})
    follower = pd.DataFrame({"example_id": ids, "event_time": t + 3.0, "f0": xf[:, 0], "f1": xf[:, 1], "fcat": cf})
    return leader, follower


def write_block(output_dir: Path, seq: int, frame: pd.DataFrame, *, committed: bool = True) -> None:
    root = Path(output_dir) / "stream" / "blocks"
    root.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(root / f"{seq:08d}.parquet", index=False)
    if not committed:
        return
    ids = "\n".join(frame["example_id"].astype(str))
    manifest = {
        "seq": seq,
        "count": len(frame),
        "id_digest": hashlib.sha256(ids.encode()).hexdigest(),
        "event_time_min": float(frame["event_time"].min()),
        "event_time_max": float(frame["event_time"].max()),
        "source_offset": {"rows": int(seq + 1) * len(frame)},
        "committed": True,
    }
    tmp = root / f".{seq:08d}.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, root / f"{seq:08d}.json")


def write_blocks(leader_dir: Path, follower_dir: Path, first: int, count: int, size: int, seed: int = 7) -> None:
    """Blocks first..first+count-1 of `size` examples each, on both sides."""
    for seq in range(first, first + count):
        lf, ff = events(size, seed, start=seq * size)
        write_block(leader_dir, seq, lf)
        write_block(follower_dir, seq, ff)
