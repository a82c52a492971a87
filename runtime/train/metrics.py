"""Binary classification metrics over whole splits (exact, rank based)."""

from __future__ import annotations

import numpy as np


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    distinct = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = tps[-1], fps[-1]
    tpr = np.r_[0.0, tps / pos] if pos > 0 else np.zeros(len(tps) + 1)
    fpr = np.r_[0.0, fps / neg] if neg > 0 else np.zeros(len(fps) + 1)
    return fpr, tpr


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """loss (log loss), auc, ks and accuracy at 0.5 of probabilities `p` against 0/1 labels `y`."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) == 0:
        return {}
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    loss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    acc = float(np.mean((p >= 0.5) == (y >= 0.5)))
    if 0 < y.sum() < len(y):
        fpr, tpr = _roc(y, p)
        auc = float(np.trapz(tpr, fpr))
        ks = float(np.max(tpr - fpr))
    else:
        auc, ks = float("nan"), float("nan")
    return {"loss": loss, "auc": auc, "ks": ks, "accuracy": acc}
