"""One side's features as bins: quantile cut points for numbers, frequency-ranked codes for categories.

The cut points and vocabularies stay on the side that owns the column. A value
goes to bin ``k`` = the number of cuts below it, so "bin <= k" is "value <= cuts[k]";
a missing value goes to bin 0 (left of every split), at training and at scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def fit_bins(df: pd.DataFrame, rows: np.ndarray, max_bin: int) -> list[dict[str, Any]]:
    """Per column: {"name", "kind": "numeric", "cuts": [...]} or {"name", "kind": "categorical", "vocab": [...]}."""
    spec: list[dict[str, Any]] = []
    part = df.iloc[rows]
    qs = np.linspace(0, 1, max_bin + 1)[1:-1]
    for name in df.columns:
        col = part[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            vals = col.astype("float64").to_numpy()
            vals = vals[np.isfinite(vals)]
            cuts = np.unique(np.quantile(vals, qs, method="lower")) if len(vals) else np.array([])
            # The largest value never separates anything: drop a cut at the maximum.
            if len(cuts) and len(vals) and cuts[-1] >= vals.max():
                cuts = cuts[:-1]
            spec.append({"name": str(name), "kind": "numeric", "cuts": [float(c) for c in cuts]})
        else:
            counts = col.dropna().astype(str).value_counts(sort=True)
            vocab = sorted(counts.index[: max_bin - 1], key=lambda v: (-counts[v], v))
            spec.append({"name": str(name), "kind": "categorical", "vocab": [str(v) for v in vocab]})
    return spec


def column_codes(col: pd.Series, c: dict[str, Any]) -> np.ndarray:
    """Bin index of every value of one column (int8)."""
    if c["kind"] == "numeric":
        vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        out = np.searchsorted(np.asarray(c["cuts"], dtype=np.float64), vals, side="left")
        out[~np.isfinite(vals)] = 0
        return out.astype(np.int8)
    vocab = c["vocab"]
    codes = pd.Categorical(col.astype(str).where(col.notna(), None), categories=vocab).codes
    # Unknown and missing values: the bin after the vocabulary.
    return np.where(codes < 0, len(vocab), codes).astype(np.int8)


def apply_bins(df: pd.DataFrame, spec: list[dict[str, Any]]) -> np.ndarray:
    """rows x columns int8 bin matrix (C order, as HEU's bucket sums want it)."""
    from runtime.errors import DataError

    out = np.zeros((len(df), len(spec)), dtype=np.int8)
    for j, c in enumerate(spec):
        if c["name"] not in df.columns:
            raise DataError(f"data: column {c['name']!r} the model was trained on is missing")
        out[:, j] = column_codes(df[c["name"]], c)
    return np.ascontiguousarray(out)


def goes_left(col: pd.Series, c: dict[str, Any], bin_threshold: int) -> np.ndarray:
    """For scoring: True where a raw value goes left of the split "bin <= bin_threshold"."""
    return column_codes(col, c) <= bin_threshold
