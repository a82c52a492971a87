"""Federated scoring with both halves of a tree model (``python -m runtime score`` on a tree model).

The follower sends, per tree, which leaves each row can reach under its own
splits; the leader intersects that with its own splits, adds the leaf weights and
writes ``{output_dir}/score/scores.csv`` (id, score). With the label column in its
table, it also reports loss, AUC and KS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsite_proto.runtime.v1 import tree_pb2 as pb
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError
from runtime.report import Reporter
from runtime.train.data import aligned_path, ids_digest, read_table
from runtime.train.step import clean, expect
from runtime.tree import core
from runtime.tree.binning import column_codes
from runtime.tree.link import TreeFollowerLink, TreeLeaderLink
from runtime.tree.step import MODEL_FORMAT, check_hello, from_bits, make_hello, to_bits, write_atomically

STAGE = "score"


def tree_model_dir(cfg: JobConfig) -> Path | None:
    """The tree model this score job uses, or None when it scores a split-NN model."""
    given = cfg.score.get("model_dir")
    candidates = [Path(given)] if given else [Path(cfg.output_dir) / "tree" / "model"]
    if not given and (Path(cfg.output_dir) / "train" / "model" / "fedsite.json").exists():
        return None
    for d in candidates:
        meta = d / "fedsite.json"
        if meta.exists():
            try:
                if json.loads(meta.read_text()).get("format") == MODEL_FORMAT:
                    return d
            except ValueError:
                return None
    return None


def _tree_of(leaves: list[int]) -> core.Tree:
    tree = core.Tree()
    for leaf in leaves:
        tree.nodes[leaf] = core.Node(id=leaf, depth=0)
    return tree


def run(cfg: JobConfig, reporter: Reporter, model_dir: Path) -> dict[str, Any]:
    half = json.loads((model_dir / "model.json").read_text())
    if half.get("role") != cfg.role:
        raise ConfigError(
            f"score.model_dir: {model_dir} holds the {half.get('role')}'s half, this side is the {cfg.role}"
        )
    timeout = float(cfg.score.get("peer_timeout_s", 300.0))
    connect = min(float(cfg.score.get("connect_timeout_s", 600.0)), cfg.timeout_s)
    path = cfg.score.get("data_path") or aligned_path(cfg, None)
    reporter.log(f"score: reading {path}")
    table = read_table(path, cfg.data.id_column, cfg.data.label_column, need_label=False, want_label=cfg.is_leader)
    spec = {c["name"]: c for c in half["features"]}
    for name in spec:
        if name not in table.features.columns:
            raise DataError(f"data: column {name!r} the model was trained on is missing from {path}")
    n = len(table.ids)
    shared = json.dumps({"model_job_id": half["job_id"], "trees": len(half["trees"])}, sort_keys=True)
    mine = make_hello(cfg, shared, n, ids_digest(table.ids), "score", [], 0)
    t0 = time.perf_counter()
    if cfg.is_leader:
        link: Any = TreeLeaderLink(cfg)
        try:
            link.accept(connect)
            theirs = expect(link.recv(timeout, "the follower's hello"), "hello")
            link.send(pb.LeaderMessage(hello=mine))
            check_hello(mine, theirs)
            margin = np.full(n, float(half["base_margin"]))
            for t, tr in enumerate(half["trees"]):
                nodes = {nd["id"]: nd for nd in tr["nodes"]}
                leaves = sorted(i for i, nd in nodes.items() if "leaf" in nd)
                tree = _tree_of(leaves)
                own = {
                    i: column_codes(table.features[nd["feature"]], spec[nd["feature"]]) <= nd["bin"]
                    for i, nd in nodes.items()
                    if nd.get("split") == "leader"
                }
                r = expect(link.recv(timeout, f"the follower's reach of tree {t + 1}"), "reach")
                if r.tree != t or r.leaves != len(leaves) or r.rows != n:
                    raise PeerError(
                        f"protocol error: reach for tree {r.tree + 1} does not match this model's tree {t + 1}"
                    )
                both = core.reach(tree, leaves, own, n) & from_bits(r.bits, n * len(leaves), "the leaf reach").reshape(
                    n, len(leaves)
                )
                if np.any(both.sum(axis=1) != 1):
                    raise DataError(
                        "misaligned data: rows reach no single leaf under both halves; align the datasets again"
                    )
                values = np.array([nodes[i]["leaf"] for i in leaves])
                margin += values[np.argmax(both, axis=1)]
                reporter.progress((t + 1) / max(len(half["trees"]), 1), STAGE)
            expect(link.recv(timeout, "the follower's end of data"), "done")
            scores = core.predict_from_margin(half["objective"], margin)
            out = Path(cfg.output_dir) / "score" / "scores.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.tmp"
            pd.DataFrame({cfg.data.id_column: table.ids, "score": scores}).to_csv(tmp, index=False)
            tmp.replace(out)
            metrics = core.metrics_of(half["objective"], table.labels, margin) if table.labels is not None else {}
            for k, v in metrics.items():
                reporter.metric(k, v, split="score")
            link.send(pb.LeaderMessage(done=pb.Done(rows=n, trees=len(half["trees"]))))
            link.close()
            result = {"role": "leader", "rows": n, "scores_path": str(out), "metrics": metrics}
            write_atomically(Path(cfg.output_dir) / "score" / "result.json", json.dumps(clean(result)))
            return clean({**result, "model_dir": str(model_dir), "seconds": time.perf_counter() - t0})
        except BaseException as exc:
            link.fail(exc)
            raise
    link = TreeFollowerLink(cfg, connect)
    try:
        link.send(pb.FollowerMessage(hello=mine))
        theirs = expect(link.recv(timeout, "the leader's hello"), "hello")
        check_hello(mine, theirs)
        by_tree: dict[int, list[dict[str, Any]]] = {}
        for s in half["splits"]:
            by_tree.setdefault(s["tree"], []).append(s)
        for t, shape in enumerate(half["trees"]):
            leaves = shape["leaves"]
            own = {
                s["node"]: column_codes(table.features[s["feature"]], spec[s["feature"]]) <= s["bin"]
                for s in by_tree.get(t, [])
            }
            r = core.reach(_tree_of(leaves), leaves, own, n)
            link.send(pb.FollowerMessage(reach=pb.Reach(tree=t, leaves=len(leaves), rows=n, bits=to_bits(r))))
            reporter.progress((t + 1) / max(len(half["trees"]), 1), STAGE)
        link.send(pb.FollowerMessage(done=pb.Done(rows=n)))
        expect(link.recv(timeout, "the leader's scores"), "done")
        link.close()
        return {"role": "follower", "rows": n, "model_dir": str(model_dir), "seconds": time.perf_counter() - t0}
    except BaseException as exc:
        link.fail(exc)
        raise
