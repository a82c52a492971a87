"""Reproducible demo data: an ad platform (leader, labels) and an advertiser (follower).

Both sides hold features of overlapping but different user sets; the label
(conversion) depends on features from both sides, so the joint model beats
either side alone. Same seed, same files, byte for byte.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

REGIONS = ["north", "south", "east", "west", "centre"]


def generate(
    out_dir: Path, *, rows_per_side: int = 60_000, overlap: float = 0.75, seed: int = 20201
) -> dict[str, Path]:
    """Write leader.csv and follower.csv under out_dir; return their paths."""
    rng = np.random.default_rng(seed)
    common = int(rows_per_side * overlap)
    universe = 2 * rows_per_side - common
    ids = np.array([f"user-{i:07d}" for i in rng.permutation(universe * 3)[:universe]])
    leader_idx = np.arange(rows_per_side)
    follower_idx = np.arange(rows_per_side - common, universe)

    xa = rng.normal(size=(universe, 6))
    xb = rng.normal(size=(universe, 8))
    region = rng.integers(0, len(REGIONS), size=universe)
    wa = np.array([1.2, -0.8, 0.6, 0.0, 0.4, -0.3])
    wb = np.array([0.9, 0.7, -1.1, 0.5, 0.0, 0.3, -0.4, 0.2])
    region_effect = np.array([0.4, -0.3, 0.1, -0.2, 0.0])[region]
    logit = xa @ wa + xb @ wb + 0.5 * xa[:, 0] * xb[:, 1] + region_effect - 0.8 + rng.normal(scale=0.5, size=universe)
    label = (rng.random(universe) < 1 / (1 + np.exp(-logit))).astype(int)

    out_dir.mkdir(parents=True, exist_ok=True)
    leader = out_dir / "leader_users_labels.csv"
    follower = out_dir / "follower_users_features.csv"
    with leader.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "clicks_7d", "dwell_s", "ad_views", "age", "sessions", "ctr", "converted"])
        for i in rng.permutation(leader_idx):
            a = xa[i]
            w.writerow(
                [
                    ids[i],
                    f"{a[0]:.5f}",
                    f"{a[1]:.5f}",
                    f"{a[2]:.5f}",
                    int(35 + 10 * a[3]),
                    f"{a[4]:.5f}",
                    f"{a[5]:.5f}",
                    label[i],
                ]
            )
    with follower.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "user_id",
                "basket_eur",
                "visits",
                "returns",
                "tenure_d",
                "newsletter",
                "coupons",
                "app_opens",
                "reviews",
                "region",
            ]
        )
        for i in rng.permutation(follower_idx):
            b = xb[i]
            w.writerow([ids[i], *(f"{v:.5f}" for v in b), REGIONS[region[i]]])
    return {"leader": leader, "follower": follower, "common": common}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the demo's two CSV files")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=20201)
    args = parser.parse_args()
    paths = generate(args.out_dir, rows_per_side=args.rows, seed=args.seed)
    print(paths)


if __name__ == "__main__":
    main()
