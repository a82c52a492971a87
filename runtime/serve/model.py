"""One side's half of a model version, as a serving runtime evaluates it.

Split NN: the follower's half maps its stored input vectors to its bottom model's
activations; the leader's runs its bottom model and the top model on both
activations. SecureBoost trees: the follower's half evaluates its own splits
(one bit per row and split: goes left); the leader's walks every tree with its own
splits and the follower's bits, and adds the leaf weights.

`encode` turns a side's feature table into the rows its store holds (the NN's
preprocessed input vector, or the trees' bin codes), so a request only looks rows up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import ConfigError, DataError

NN_FORMAT = "fedsite-splitnn/1"
TREE_FORMAT = "fedsite-tree/1"


def configure_tf(threads: int) -> None:
    """TensorFlow thread pools for serving: small batches run fastest on one thread each
    (the serving runtime's concurrency comes from its request threads, not from inside an op)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process (tests run both sides in one)


def read_meta(model_dir: Path) -> dict[str, Any]:
    meta_file = model_dir / "fedsite.json"
    if not meta_file.exists():
        raise ConfigError(f"serve.model_dir: {model_dir} is not a trained Fedsite model (no fedsite.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        raise ConfigError(f"serve.model_dir: {meta_file} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") not in (NN_FORMAT, TREE_FORMAT):
        raise ConfigError(f"serve.model_dir: {model_dir} holds no model format this runtime serves")
    return meta


def load_half(model_dir: str | Path, role: str, *, tf_threads: int = 1) -> NNHalf | TreeHalf:
    """This side's half of the model in `model_dir` (checked to be the `role`'s half); trees need no TensorFlow."""
    d = Path(model_dir)
    meta = read_meta(d)
    if meta.get("format") == TREE_FORMAT:
        return TreeHalf(d, role)
    configure_tf(tf_threads)
    return NNHalf(d, role, meta)


def supplied_frame(values: dict[str, str], columns: list[dict[str, Any]]) -> pd.DataFrame:
    """One row from a caller's feature values (text), checked against the model's columns."""
    row: dict[str, Any] = {}
    for c in columns:
        name = c["name"]
        if name not in values:
            raise DataError(f"feature {name!r} is missing (the model uses: {', '.join(x['name'] for x in columns)})")
        raw = values[name]
        if c["kind"] == "numeric":
            if raw.strip() == "":
                row[name] = math.nan
                continue
            try:
                row[name] = float(raw)
            except ValueError:
                raise DataError(f"feature {name!r} must be a number, got {raw[:40]!r}") from None
        else:
            row[name] = raw
    extra = sorted(set(values) - {c["name"] for c in columns})
    if extra:
        raise DataError(f"unknown features: {', '.join(extra[:5])}")
    return pd.DataFrame({k: [v] for k, v in row.items()})


class NNHalf:
    """A split-NN half from its TensorFlow SavedModel."""

    family = "nn"
    dtype = "<f4"

    def __init__(self, model_dir: Path, role: str, meta: dict[str, Any]) -> None:
        import tensorflow as tf

        from runtime.train.data import Preprocessor

        if meta.get("role") != role:
            raise ConfigError(
                f"serve.model_dir: {model_dir} holds the {meta.get('role')}'s half, this side is the {role}"
            )
        self.role = role
        self.model_job_id = str(meta["job_id"])
        self.pre = Preprocessor.from_json((model_dir / "preprocess.json").read_text())
        self.columns = self.pre.spec
        self.width = self.pre.width
        self.out_width = int(meta["activation_dim"])
        self.peer_width = int(meta.get("peer_activation_dim") or 0)
        self.model = tf.saved_model.load(str(model_dir))
        model = self.model
        x_spec = tf.TensorSpec([None, self.width], tf.float32)
        if role == "leader":
            a_spec = tf.TensorSpec([None, self.peer_width], tf.float32)

            @tf.function(input_signature=[x_spec, a_spec])
            def scores(x: Any, a_follower: Any) -> Any:
                return model.top(model.bottom(x), a_follower)

            # Concrete functions: a call skips tf.function's signature matching (~1 ms of the ~1.3 ms per call).
            self._scores = scores.get_concrete_function()
        self._bottom = model.bottom.get_concrete_function(x_spec)
        self._tf = tf

    @property
    def follower_width(self) -> int:
        """What the follower's half outputs per row (the handshake checks both sides agree)."""
        return self.peer_width if self.role == "leader" else self.out_width

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        return self.pre.transform(df)

    def follower_output(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, self.out_width), np.float32)
        return np.asarray(self._bottom(self._tf.constant(rows)).numpy(), dtype=np.float32)

    def leader_scores(self, rows: np.ndarray, activations: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0)
        tf = self._tf
        return np.asarray(self._scores(tf.constant(rows), tf.constant(activations)).numpy(), dtype=np.float64)


class TreeHalf:
    """A SecureBoost half from its JSON model."""

    family = "tree"
    dtype = "|i1"

    def __init__(self, model_dir: Path, role: str) -> None:
        half = json.loads((model_dir / "model.json").read_text())
        if half.get("role") != role:
            raise ConfigError(
                f"serve.model_dir: {model_dir} holds the {half.get('role')}'s half, this side is the {role}"
            )
        self.role = role
        self.model_job_id = str(half["job_id"])
        self.columns: list[dict[str, Any]] = half["features"]
        self.width = len(self.columns)
        index = {c["name"]: j for j, c in enumerate(self.columns)}
        if role == "follower":
            splits = sorted(half["splits"], key=lambda s: (s["tree"], s["node"]))
            self._cols = np.array([index[s["feature"]] for s in splits], dtype=np.int64)
            self._bins = np.array([s["bin"] for s in splits], dtype=np.int64)
            self.splits = len(splits)
            return
        self.objective = half["objective"]
        self.base_margin = float(half["base_margin"])
        trees = [{nd["id"]: nd for nd in tr["nodes"]} for tr in half["trees"]]
        own = sorted((t, i) for t, nodes in enumerate(trees) for i, nd in nodes.items() if nd.get("split") == "leader")
        theirs = sorted(
            (t, i) for t, nodes in enumerate(trees) for i, nd in nodes.items() if nd.get("split") == "follower"
        )
        self.splits = len(theirs)
        self._cols = np.array([index[trees[t][i]["feature"]] for t, i in own], dtype=np.int64)
        self._bins = np.array([trees[t][i]["bin"] for t, i in own], dtype=np.int64)
        # Per tree and node id: leaf?, leaf weight, and which decision column (own first, then the follower's).
        size = max((max(nodes) for nodes in trees if nodes), default=0) + 1
        n_trees = len(trees)
        self._leaf = np.ones((n_trees, size), dtype=bool)
        self._value = np.zeros((n_trees, size), dtype=np.float64)
        self._col = np.zeros((n_trees, size), dtype=np.int64)
        for j, (t, i) in enumerate(own):
            self._leaf[t, i], self._col[t, i] = False, j
        for j, (t, i) in enumerate(theirs):
            self._leaf[t, i], self._col[t, i] = False, len(own) + j
        for t, nodes in enumerate(trees):
            for i, nd in nodes.items():
                if "leaf" in nd:
                    self._value[t, i] = float(nd["leaf"])
        self._depth = max((nd["depth"] for nodes in trees for nd in nodes.values()), default=0)
        self.trees = n_trees

    @property
    def follower_width(self) -> int:
        return self.splits

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        from runtime.tree.binning import apply_bins

        return apply_bins(df, self.columns)

    def decisions(self, codes: np.ndarray) -> np.ndarray:
        """rows x this side's splits: True where the row goes left."""
        return codes[:, self._cols].astype(np.int64) <= self._bins

    def follower_output(self, rows: np.ndarray) -> np.ndarray:
        return self.decisions(rows)

    def leader_scores(self, rows: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        from runtime.tree.core import predict_from_margin

        n = len(rows)
        if n == 0:
            return np.zeros(0)
        both = np.concatenate([self.decisions(rows), theirs.astype(bool)], axis=1)
        tix = np.arange(self.trees)
        rix = np.arange(n)[:, None]
        node = np.zeros((n, self.trees), dtype=np.int64)
        for _ in range(self._depth + 1):
            leaf = self._leaf[tix, node]
            if leaf.all():
                break
            left = both[rix, self._col[tix, node]] if both.shape[1] else np.zeros_like(leaf)
            node = np.where(leaf, node, np.where(left, 2 * node + 1, 2 * node + 2))
        values = self._value[tix, node]
        margin = np.full(n, self.base_margin)
        for t in range(self.trees):
            margin += values[:, t]
        return np.asarray(predict_from_margin(self.objective, margin), dtype=np.float64)


class WholeModel:
    """Both halves in one process (the no-federation baseline of bench/serving.py)."""

    def __init__(self, leader: NNHalf | TreeHalf, follower: NNHalf | TreeHalf) -> None:
        self.leader, self.follower = leader, follower
        self._fn: Any = None
        if isinstance(leader, NNHalf) and isinstance(follower, NNHalf):
            import tensorflow as tf

            lm, fm = leader.model, follower.model

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, leader.width], tf.float32),
                    tf.TensorSpec([None, follower.width], tf.float32),
                ]
            )
            def whole(xl: Any, xf: Any) -> Any:
                return lm.top(lm.bottom(xl), fm.bottom(xf))

            self._fn = whole.get_concrete_function()
            self._tf = tf

    def scores(self, rows_leader: np.ndarray, rows_follower: np.ndarray) -> np.ndarray:
        if self._fn is not None:
            tf = self._tf
            out = self._fn(tf.constant(rows_leader), tf.constant(rows_follower))
            return np.asarray(out.numpy(), dtype=np.float64)
        return self.leader.leader_scores(rows_leader, self.follower.follower_output(rows_follower))
