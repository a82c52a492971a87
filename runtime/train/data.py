"""This side's aligned table: reading, alignment hashes, preprocessing and batch schedules."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import DataError


@dataclass
class Table:
    """Rows of one side, in the aligned order."""

    path: str
    ids: np.ndarray  # object array of str
    features: pd.DataFrame
    labels: np.ndarray | None  # float32 0/1, leader only


def aligned_path(cfg: Any, explicit: str | None) -> str:
    """PSI output if present, else an explicit path, else the dataset itself."""
    psi = Path(cfg.output_dir) / "psi" / "aligned.csv"
    if psi.exists():
        return str(psi)
    return explicit or cfg.data.path


def read_table(
    path: str, id_column: str, label_column: str | None, *, need_label: bool, want_label: bool = False
) -> Table:
    """Read a CSV or Parquet table; `need_label` requires the label column, `want_label` takes it if present."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data: {path} does not exist")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, encoding="utf-8", low_memory=False)
    except UnicodeDecodeError:
        raise DataError(f"data: {path} is not UTF-8") from None
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many kinds; name the file
        raise DataError(f"data: cannot read {path}: {exc}") from None
    if df.empty:
        raise DataError(f"data: {path} has no rows")
    if id_column not in df.columns:
        raise DataError(
            f"data: {path} has no id column {id_column!r} (columns: {', '.join(map(str, df.columns[:10]))})"
        )
    ids = df[id_column].astype(str).to_numpy(dtype=object)
    if pd.Series(ids).duplicated().any():
        raise DataError(f"data: {path} has duplicate ids in column {id_column!r}")
    labels = None
    drop = [id_column]
    if want_label and not need_label and label_column and label_column in df.columns:
        need_label = True
    if need_label:
        if not label_column or label_column not in df.columns:
            raise DataError(f"data: the leader's table {path} has no label column {label_column!r}")
        raw = pd.to_numeric(df[label_column], errors="coerce")
        if raw.isna().any():
            line = int(np.flatnonzero(raw.isna().to_numpy())[0]) + 2
            raise DataError(f"data: {path} line {line}: label {label_column!r} is missing or not a number")
        uniq = set(np.unique(raw.to_numpy()))
        if not uniq <= {0, 1}:
            raise DataError(f"data: label {label_column!r} must be 0/1, found {sorted(uniq)[:5]}")
        labels = raw.to_numpy(dtype=np.float32)
        drop.append(label_column)
    elif label_column and label_column in df.columns:
        drop.append(label_column)
    features = df.drop(columns=drop)
    if features.shape[1] == 0:
        raise DataError(f"data: {path} has no feature columns besides the id{' and label' if need_label else ''}")
    return Table(path=str(p), ids=ids, features=features, labels=labels)


# -- alignment ---------------------------------------------------------------
def ids_digest(ids: np.ndarray) -> bytes:
    """SHA-256 over all ids in order; equal on both sides iff the rows are aligned."""
    h = hashlib.sha256()
    step = 65536
    for i in range(0, len(ids), step):
        h.update(("\n".join(ids[i : i + step]) + "\n").encode())
    return h.digest()


def batch_hash(ids: np.ndarray, idx: np.ndarray) -> bytes:
    return hashlib.sha256("\n".join(ids[idx]).encode()).digest()[:16]


# -- splits and batches ------------------------------------------------------
def split_rows(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices; the same on both sides for the same n and seed."""
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = int(round(n * validation_fraction))
    if validation_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    if n - n_val < 1:
        raise DataError(f"data: {n} rows leave nothing to train on with validation_fraction {validation_fraction}")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_for_training(
    n: int, validation_fraction: float, early_stopping_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, early stopping, validation) row indices, the same on both sides.

    The validation rows are those of :func:`split_rows`; the early-stopping rows
    are carved from its training part (``early_stopping_fraction`` of all rows),
    so the epoch early stopping keeps is chosen on rows that neither trained the
    model nor produce the validation metrics reported for it.
    """
    train, val = split_rows(n, validation_fraction, seed)
    n_es = int(round(n * early_stopping_fraction))
    if early_stopping_fraction > 0 and n_es == 0 and len(train) > 1:
        n_es = 1
    if len(train) - n_es < 1:
        raise DataError(
            f"data: {n} rows leave nothing to train on with validation_fraction {validation_fraction} "
            f"and early_stopping_fraction {early_stopping_fraction}"
        )
    perm = np.random.default_rng([seed, 9]).permutation(len(train))
    return np.sort(train[perm[n_es:]]), np.sort(train[perm[:n_es]]), val


def epoch_order(train_idx: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    return train_idx[np.random.default_rng([seed, 11, epoch]).permutation(len(train_idx))]


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# -- preprocessing -----------------------------------------------------------
class Preprocessor:
    """Standardise numeric columns and one-hot encode categorical ones, learned on this side's data."""

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.spec = spec

    @property
    def width(self) -> int:
        return sum(1 if c["kind"] == "numeric" else len(c["vocab"]) + 1 for c in self.spec)

    @classmethod
    def fit(cls, df: pd.DataFrame, rows: np.ndarray, max_categories: int) -> Preprocessor:
        spec: list[dict[str, Any]] = []
        part = df.iloc[rows]
        for name in df.columns:
            col = part[name]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                vals = col.astype("float64")
                mean = float(np.nanmean(vals)) if vals.notna().any() else 0.0
                std = float(np.nanstd(vals)) if vals.notna().any() else 1.0
                spec.append({"name": str(name), "kind": "numeric", "mean": mean, "std": std if std > 1e-12 else 1.0})
            else:
                counts = col.dropna().astype(str).value_counts()
                vocab = [str(v) for v in counts.index[:max_categories]]
                spec.append({"name": str(name), "kind": "categorical", "vocab": vocab})
        return cls(spec)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(df), self.width), dtype=np.float32)
        j = 0
        for c in self.spec:
            if c["name"] not in df.columns:
                raise DataError(f"data: column {c['name']!r} the model was trained on is missing")
            col = df[c["name"]]
            if c["kind"] == "numeric":
                vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                vals = (vals - c["mean"]) / c["std"]
                out[:, j] = np.nan_to_num(vals, nan=0.0, posinf=0.0, neginf=0.0)
                j += 1
            else:
                k = len(c["vocab"])
                codes = pd.Categorical(col.astype(str).where(col.notna(), None), categories=c["vocab"]).codes
                codes = np.where(codes < 0, k, codes)  # unknown or missing: the extra slot
                out[np.arange(len(df)), j + codes] = 1.0
                j += k + 1
        return out

    def to_json(self) -> str:
        return json.dumps({"version": 1, "columns": self.spec})

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls(json.loads(text)["columns"])
