"""One side's features as bins: XGBoost ``hist`` cut points for numbers, frequency-ranked codes for categories.

The cut points and vocabularies stay on the side that owns the column. Numeric
cut points are XGBoost's own quantile sketch of the column's training rows
(``QuantileDMatrix(max_bin=...)``, unweighted, as ``tree_method="hist"`` computes
them; the sketch is per column, so each side computes exactly the cuts XGBoost
would on the joined table). XGBoost's rule applies: in float32, a value goes to
bin ``k`` = the number of cuts <= it, so "bin <= k" is "value < cuts[k]"
(``"rule": "lt"`` in the spec). Specs written before that rule existed have no
``rule`` and keep theirs: bin ``k`` = the number of cuts below the value, so
"bin <= k" is "value <= cuts[k]".
A missing value goes to bin 0 (left of every split), at training and at scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def numeric_cuts(values: np.ndarray, max_bin: int) -> list[np.ndarray]:
    """Per column of `values` (rows x columns, float): XGBoost hist's inner cut points (float32, ascending).

    XGBoost brackets each column's cuts with a value below its minimum and one above
    its maximum; those separate nothing and are dropped. Non-finite values count as missing.
    """
    import xgboost as xgb

    if values.shape[1] == 0:
        return []
    x = np.where(np.isfinite(values), values, np.nan).astype(np.float32)
    ptr, vals = xgb.QuantileDMatrix(x, max_bin=max_bin, nthread=1).get_quantile_cut()
    return [vals[int(ptr[j]) + 1 : max(int(ptr[j]) + 1, int(ptr[j + 1]) - 1)] for j in range(values.shape[1])]


def fit_bins(df: pd.DataFrame, rows: np.ndarray, max_bin: int) -> list[dict[str, Any]]:
    """Per column: {"name", "kind": "numeric", "rule": "lt", "cuts": [...]} or {"name", "kind": "categorical", "vocab": [...]}."""
    spec: list[dict[str, Any]] = []
    part = df.iloc[rows]
    numeric = [
        name
        for name in df.columns
        if pd.api.types.is_bool_dtype(part[name]) or pd.api.types.is_numeric_dtype(part[name])
    ]
    values = part[numeric].astype("float64").to_numpy() if numeric else np.zeros((len(part), 0))
    cuts = dict(zip(numeric, numeric_cuts(values, max_bin), strict=True))
    for name in df.columns:
        col = part[name]
        if name in cuts:
            spec.append({"name": str(name), "kind": "numeric", "rule": "lt", "cuts": [float(c) for c in cuts[name]]})
        else:
            counts = col.dropna().astype(str).value_counts(sort=True)
            vocab = sorted(counts.index[: max_bin - 1], key=lambda v: (-counts[v], v))
            spec.append({"name": str(name), "kind": "categorical", "vocab": [str(v) for v in vocab]})
    return spec


def column_codes(col: pd.Series, c: dict[str, Any]) -> np.ndarray:
    """Bin index of every value of one column (int8)."""
    if c["kind"] == "numeric":
        vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        if c.get("rule") == "lt":  # XGBoost's: compared in float32, a value equal to a cut goes right
            with np.errstate(over="ignore"):
                out = np.searchsorted(np.asarray(c["cuts"], dtype=np.float32), vals.astype(np.float32), side="right")
        else:
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
