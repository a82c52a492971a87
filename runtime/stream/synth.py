"""Synthetic click/conversion events for tests, the benchmark and the demo, and the batch join they must equal.

The leader's events are clicks (``click_id``, ``event_time``, two numbers, ``label``),
the follower's are conversions (``click_id``, ``event_time``, two numbers). A share of
the ids exists on both sides, with the follower's event time within ``max_delay`` of
the leader's (a few further apart, which must not join); each side's delivery order
is its event-time order shuffled by at most ``disorder_s`` (so with
``disorder_s <= lateness`` no event is late).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ID_COLUMN = "click_id"
TIME_COLUMN = "event_time"


def make_events(
    n: int,
    *,
    shared: float = 0.7,
    max_delay: float = 600.0,
    disorder_s: float = 30.0,
    t0: float = 1_700_000_000.0,
    span_s: float | None = None,
    far: float = 0.02,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leader, follower) events in delivery order; ``n`` events per side."""
    rng = np.random.default_rng(seed)
    span = span_s if span_s is not None else max(n / 10_000.0, 1.0)
    n_shared = int(n * shared)
    ids_shared = np.array([f"c{i:09d}" for i in range(n_shared)], dtype=object)
    ids_l = np.concatenate([ids_shared, np.array([f"l{i:09d}" for i in range(n - n_shared)], dtype=object)])
    ids_f = np.concatenate([ids_shared, np.array([f"f{i:09d}" for i in range(n - n_shared)], dtype=object)])
    t_l = t0 + rng.uniform(0, span, n)
    delay = rng.uniform(-0.5 * max_delay, 0.9 * max_delay, n_shared)
    too_far = rng.random(n_shared) < far
    delay[too_far] = max_delay * rng.uniform(1.05, 2.0, int(too_far.sum()))
    t_f = np.concatenate([t_l[:n_shared] + delay, t0 + rng.uniform(0, span, n - n_shared)])
    leader = pd.DataFrame(
        {
            ID_COLUMN: ids_l,
            TIME_COLUMN: t_l,
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "label": (rng.random(n) < 0.2).astype(np.int64),
        }
    )
    follower = pd.DataFrame({ID_COLUMN: ids_f, TIME_COLUMN: t_f, "f1": rng.normal(size=n), "f2": rng.normal(size=n)})

    def delivery(df: pd.DataFrame) -> pd.DataFrame:
        key = df[TIME_COLUMN].to_numpy() + rng.uniform(0, disorder_s, len(df))
        return df.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)

    return delivery(leader), delivery(follower)


def batch_join(leader: pd.DataFrame, follower: pd.DataFrame, max_delay: float) -> pd.DataFrame:
    """The reference: same id on both sides, event times at most ``max_delay`` apart."""
    m = leader.merge(follower, on=ID_COLUMN, suffixes=("_l", "_f"))
    return m[np.abs(m[f"{TIME_COLUMN}_l"] - m[f"{TIME_COLUMN}_f"]) <= max_delay]


def write_parts(df: pd.DataFrame, folder: Path, rows_per_part: int, *, start: int = 0, fmt: str = "parquet") -> int:
    """Land ``df`` as part files (written under a dot name, then renamed); return the next part number."""
    folder.mkdir(parents=True, exist_ok=True)
    part = start
    for lo in range(0, len(df), rows_per_part):
        chunk = df.iloc[lo : lo + rows_per_part]
        name = f"part-{part:06d}.{fmt}"
        tmp = folder / f".{name}.tmp"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), tmp)
        else:
            chunk.to_csv(tmp, index=False)
        tmp.rename(folder / name)
        part += 1
    return part
