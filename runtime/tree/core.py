"""The arithmetic of boosted trees over binned data, in the clear.

The federated leader and the central reference (tests, benchmark) both use these
functions on the same fixed-point gradients, so a federated tree equals the
central one exactly: histogram sums are integers below 2**52, exact in float64,
whether they were added in the clear or under homomorphic encryption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.train.metrics import binary_metrics
from runtime.tree.params import TreeParams

# Fixed point: |sum of quantised gradients| < 2**52 over all rows, with at most 24 fraction bits.
MAX_FRACTION_BITS = 24
SUM_BITS = 52
# One plaintext holds hessian * 2**PACK_BITS + gradient; the gradient's sum never reaches 2**(PACK_BITS-1).
PACK_BITS = SUM_BITS + 2
GAIN_EPS = 1e-6


# -- objective -----------------------------------------------------------------
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def base_margin(objective: str, y: np.ndarray) -> float:
    if objective == "binary:logistic":
        p = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6)) if len(y) else 0.5
        return math.log(p / (1 - p))
    return float(np.mean(y)) if len(y) else 0.0


def grad_hess(objective: str, y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if objective == "binary:logistic":
        p = sigmoid(margin)
        return p - y, np.maximum(p * (1 - p), 1e-16)
    return margin - y, np.ones_like(margin)


def predict_from_margin(objective: str, margin: np.ndarray) -> np.ndarray:
    return sigmoid(margin) if objective == "binary:logistic" else margin


def metrics_of(objective: str, y: np.ndarray, margin: np.ndarray) -> dict[str, float]:
    if len(y) == 0:
        return {}
    if objective == "binary:logistic":
        return binary_metrics(y, sigmoid(margin))
    mse = float(np.mean((margin - y) ** 2))
    return {"loss": mse, "rmse": math.sqrt(mse)}


# -- fixed point -----------------------------------------------------------------
def quantize(g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Integer-valued float64 gradients and hessians, and their scale (sums stay below 2**52)."""
    n = max(len(g), 1)
    m = max(float(np.max(np.abs(g), initial=0.0)), float(np.max(h, initial=0.0)), 1e-12)
    bits = min(MAX_FRACTION_BITS, math.floor(SUM_BITS - math.log2(n * m) - 1))
    scale = 2.0**bits
    return np.round(g * scale), np.round(h * scale), scale


def pack(gq: np.ndarray, hq: np.ndarray) -> np.ndarray:
    """One Python int per row: hessian << PACK_BITS + gradient (object array, for HEU)."""
    return (hq.astype(np.int64).astype(object) << PACK_BITS) + gq.astype(np.int64).astype(object)


def unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of packed values back to (G, H) as integer-valued float64."""
    half = 1 << (PACK_BITS - 1)
    mask = (1 << PACK_BITS) - 1
    flat = packed.ravel()
    g = ((flat + half) & mask) - half
    h = (flat - g) >> PACK_BITS
    return g.astype(np.float64), h.astype(np.float64)


# -- histograms and splits ---------------------------------------------------------
def histograms(bins: np.ndarray, rows: np.ndarray, gq: np.ndarray, hq: np.ndarray, nbins: int) -> np.ndarray:
    """Cumulative per-feature, per-bin sums over `rows`: shape (2, features * nbins) = (G, H)."""
    f = bins.shape[1]
    if f == 0:
        return np.zeros((2, 0))
    flat = (bins[rows].astype(np.int64) + np.arange(f, dtype=np.int64) * nbins).ravel()
    size = f * nbins
    g = np.bincount(flat, weights=np.repeat(gq[rows], f), minlength=size).reshape(f, nbins).cumsum(axis=1)
    h = np.bincount(flat, weights=np.repeat(hq[rows], f), minlength=size).reshape(f, nbins).cumsum(axis=1)
    return np.stack([g.ravel(), h.ravel()])


def split_gains(hist: np.ndarray, g_tot: float, h_tot: float, scale: float, p: TreeParams) -> np.ndarray:
    """Loss reduction of every candidate "left = bin <= k" (-inf where a child is too light)."""
    gl, hl = hist[0] / scale, hist[1] / scale
    gt, ht = g_tot / scale, h_tot / scale
    gr, hr = gt - gl, ht - hl
    lam = p.reg_lambda
    ok = (hl >= p.min_child_weight) & (hr >= p.min_child_weight) & (hl + lam > 0) & (hr + lam > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - (gt**2 / (ht + lam) if ht + lam > 0 else 0.0)
    return np.where(ok, gain, -np.inf)


def choose(gains: np.ndarray, p: TreeParams) -> tuple[int, float]:
    """The first best candidate, or (-1, 0) when no split is worth its gamma."""
    if len(gains) == 0:
        return -1, 0.0
    i = int(np.argmax(gains))
    g = float(gains[i])
    if not np.isfinite(g) or g <= max(p.gamma, GAIN_EPS):
        return -1, 0.0
    return i, g


def leaf_value(g_tot: float, h_tot: float, scale: float, p: TreeParams) -> float:
    den = h_tot / scale + p.reg_lambda
    return float(-(g_tot / scale) / den * p.learning_rate) if den > 0 else 0.0


def column_sample(nfeatures: int, fraction: float, seed: int, tree: int, side: int) -> np.ndarray:
    """The features one side uses for one tree (sorted), the same for the same seed."""
    if fraction >= 1.0 or nfeatures == 0:
        return np.arange(nfeatures)
    k = max(1, int(round(nfeatures * fraction)))
    return np.sort(np.random.default_rng([seed, 23, tree, side]).choice(nfeatures, size=k, replace=False))


def row_sample(n_train: int, fraction: float, seed: int, tree: int) -> np.ndarray:
    """Positions (into the training rows) in one tree's sample, sorted."""
    if fraction >= 1.0:
        return np.arange(n_train)
    keep = np.flatnonzero(np.random.default_rng([seed, 29, tree]).random(n_train) < fraction)
    return keep if len(keep) else np.arange(min(1, n_train))


def smaller_first(left: np.ndarray, right: np.ndarray) -> bool:
    """Which child's histogram is summed (the other is parent minus it): the left one on ties."""
    return len(left) <= len(right)


# -- the model -----------------------------------------------------------------
@dataclass
class Node:
    """One node of a tree as the leader holds it."""

    id: int
    depth: int
    leaf: bool = True
    owner: str = ""  # "leader" | "follower" for splits
    feature: int = -1  # leader's own feature index (leader splits only)
    bin: int = -1  # leader's own bin threshold (leader splits only)
    gain: float = 0.0
    value: float = 0.0  # leaf weight
    cover: float = 0.0  # sum of hessians

    def to_json(self, feature_names: list[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "depth": self.depth, "cover": self.cover}
        if self.leaf:
            d["leaf"] = self.value
        else:
            d.update(split=self.owner, gain=self.gain, left=2 * self.id + 1, right=2 * self.id + 2)
            if self.owner == "leader":
                d.update(feature=feature_names[self.feature] if feature_names else self.feature, bin=self.bin)
        return d


@dataclass
class Tree:
    nodes: dict[int, Node] = field(default_factory=dict)

    def leaves(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if n.leaf)

    def path(self, leaf: int) -> list[tuple[int, bool]]:
        """(ancestor id, goes left) from the root down to `leaf`."""
        out = []
        i = leaf
        while i > 0:
            parent = (i - 1) // 2
            out.append((parent, i == 2 * parent + 1))
            i = parent
        return out[::-1]


def reach(tree: Tree, leaves: list[int], goes_left: dict[int, np.ndarray], n: int) -> np.ndarray:
    """rows x leaves: which leaves a row can reach knowing only the splits in `goes_left` (node -> bool rows)."""
    out = np.ones((n, len(leaves)), dtype=bool)
    for j, leaf in enumerate(leaves):
        for node, left in tree.path(leaf):
            if node in goes_left:
                out[:, j] &= goes_left[node] if left else ~goes_left[node]
    return out


# -- the central reference ---------------------------------------------------------
def train_central(
    bins_leader: np.ndarray,
    bins_follower: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    p: TreeParams,
) -> dict[str, Any]:
    """The same boosting on the joined bins in one place: trees (with follower splits as (feature, bin)) and history.

    Mirrors the federated leader step by step (same sampling, candidate order and ties),
    so tests can compare splits and leaf values.
    """
    n = len(y)
    fl, ff = bins_leader.shape[1], bins_follower.shape[1]
    base = base_margin(p.objective, y[train_idx])
    margin = np.full(n, base)
    trees: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    best, best_it, wait = math.inf, -1, 0
    yt = y[train_idx]
    for t in range(p.num_trees):
        g, h = grad_hess(p.objective, yt, margin[train_idx])
        gq, hq, scale = quantize(g, h)
        cols_l = column_sample(fl, p.colsample_bytree, p.seed, t, 0)
        cols_f = column_sample(ff, p.colsample_bytree, p.seed, t, 1)
        bl = np.ascontiguousarray(bins_leader[train_idx][:, cols_l])
        bf = np.ascontiguousarray(bins_follower[train_idx][:, cols_f])
        tree = Tree()
        follower_splits: dict[int, tuple[int, int]] = {}
        open_nodes = {0: row_sample(len(train_idx), p.subsample, p.seed, t)}
        depth = 0
        while open_nodes:
            nxt: dict[int, np.ndarray] = {}
            for nid in sorted(open_nodes):
                rows = open_nodes[nid]
                gt, ht = float(gq[rows].sum()), float(hq[rows].sum())
                node = Node(id=nid, depth=depth, cover=ht / scale)
                tree.nodes[nid] = node
                best_i, gain = -1, 0.0
                if depth < p.max_depth:
                    hist = np.concatenate(
                        [histograms(bl, rows, gq, hq, p.max_bin), histograms(bf, rows, gq, hq, p.max_bin)], axis=1
                    )
                    best_i, gain = choose(split_gains(hist, gt, ht, scale, p), p)
                if best_i < 0:
                    node.value = leaf_value(gt, ht, scale, p)
                    continue
                node.leaf, node.gain = False, gain
                f, k = divmod(best_i, p.max_bin)
                if f < len(cols_l):
                    node.owner, node.feature, node.bin = "leader", int(cols_l[f]), k
                    left = bl[rows, f] <= k
                else:
                    f -= len(cols_l)
                    node.owner = "follower"
                    follower_splits[nid] = (int(cols_f[f]), k)
                    left = bf[rows, f] <= k
                nxt[2 * nid + 1], nxt[2 * nid + 2] = rows[left], rows[~left]
            open_nodes = nxt
            depth += 1
        leaves = tree.leaves()
        gl = {i: bins_leader[:, nd.feature] <= nd.bin for i, nd in tree.nodes.items() if nd.owner == "leader"}
        gf = {i: bins_follower[:, f] <= k for i, (f, k) in follower_splits.items()}
        r = reach(tree, leaves, gl, n) & reach(tree, leaves, gf, n)
        values = np.array([tree.nodes[i].value for i in leaves])
        margin = margin + values[np.argmax(r, axis=1)]
        m = {
            "train": metrics_of(p.objective, yt, margin[train_idx]),
            "validation": metrics_of(p.objective, y[val_idx], margin[val_idx]),
        }
        history.append({"tree": t + 1, **m})
        trees.append({"nodes": {i: nd for i, nd in tree.nodes.items()}, "follower_splits": follower_splits})
        monitor = m["validation"].get("loss", m["train"]["loss"])
        if monitor < best:
            best, best_it, wait = monitor, t, 0
        else:
            wait += 1
        if p.early_stopping_rounds and wait >= p.early_stopping_rounds:
            break
    keep = best_it + 1 if p.early_stopping_rounds else len(trees)
    return {"base_margin": base, "trees": trees[:keep], "history": history, "best_iteration": best_it}
