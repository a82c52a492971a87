"""The ``score`` command: federated scoring of a new aligned dataset with both trained halves.

Params in the config's ``score`` block (all optional): ``model_dir`` (default
``{output_dir}/train/model``), ``data_path`` (default: the PSI output, else the
dataset), ``batch_size`` (4096), ``check_alignment_every`` (10). The follower
streams its bottom model's activations; the leader runs its bottom and top
models and writes ``{output_dir}/score/scores.csv`` (id, score). When the
leader's table has the label column, it also reports loss, AUC, KS and accuracy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsite_proto.runtime.v1 import train_pb2 as pb
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError
from runtime.report import Reporter
from runtime.train.data import Preprocessor, aligned_path, batch_hash, batches, ids_digest, read_table
from runtime.train.link import PROTOCOL_VERSION, FollowerLink, LeaderLink, from_tensor, to_tensor
from runtime.train.metrics import binary_metrics
from runtime.train.params import parse_train_params
from runtime.train.step import check_hello, clean, expect

STAGE = "score"


def _int(raw: dict[str, Any], key: str, default: int) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"score.{key}: must be a positive integer, got {v!r}")
    return v


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    from runtime.tree.score import tree_model_dir

    tree_dir = tree_model_dir(cfg)
    if tree_dir is not None:  # a tree model: SecureBoost's own scoring protocol
        from runtime.tree.score import run as run_tree_score

        return run_tree_score(cfg, reporter, tree_dir)
    sp = dict(cfg.score)
    model_dir = Path(sp.get("model_dir") or Path(cfg.output_dir) / "train" / "model")
    batch_size = _int(sp, "batch_size", 4096)
    every = _int(sp, "check_alignment_every", 10)
    timeout = float(sp.get("peer_timeout_s", 300.0))
    meta_file = model_dir / "fedsite.json"
    if not meta_file.exists():
        raise ConfigError(f"score.model_dir: {model_dir} is not a trained Fedsite model (no fedsite.json)")
    meta = json.loads(meta_file.read_text())
    if meta.get("role") != cfg.role:
        raise ConfigError(
            f"score.model_dir: {model_dir} holds the {meta.get('role')}'s half, this side is the {cfg.role}"
        )
    pre = Preprocessor.from_json((model_dir / "preprocess.json").read_text())

    from runtime.train.nn import configure_threads

    configure_threads(parse_train_params(cfg.train))
    import tensorflow as tf

    path = sp.get("data_path") or aligned_path(cfg, None)
    reporter.log(f"score: reading {path}")
    table = read_table(path, cfg.data.id_column, cfg.data.label_column, need_label=False, want_label=cfg.is_leader)
    x = pre.transform(table.features)
    model = tf.saved_model.load(str(model_dir))
    n = len(table.ids)
    shared = json.dumps(
        {"batch_size": batch_size, "check_alignment_every": every, "model_job_id": meta["job_id"]}, sort_keys=True
    )
    mine = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        job_id=cfg.job_id,
        role=cfg.role,
        mode="score",
        rows=n,
        ids_digest=ids_digest(table.ids),
        shared_params=shared,
        activation_dim=int(meta["activation_dim"]),
    )
    bl = batches(np.arange(n), batch_size)
    t0 = time.perf_counter()
    if cfg.is_leader:
        link = LeaderLink(cfg)
        try:
            link.accept(min(float(sp.get("connect_timeout_s", 600.0)), cfg.timeout_s))
            theirs = expect(link.recv(timeout, "the follower's hello"), "hello")
            link.send(pb.LeaderMessage(hello=mine))
            check_hello(mine, theirs)
            if theirs.activation_dim != meta["peer_activation_dim"]:
                raise ConfigError(
                    f"the follower's model outputs {theirs.activation_dim} activations, this leader's top expects {meta['peer_activation_dim']}"
                )
            scores = np.empty(n, np.float32)
            for b, idx in enumerate(bl):
                act = expect(link.recv(timeout, f"activations of batch {b}"), "activations")
                if act.batch != b or act.split != "score":
                    raise PeerError(f"protocol error: expected score batch {b}, got {act.split} batch {act.batch}")
                if b % every == 0 and act.ids_hash != batch_hash(table.ids, idx):
                    raise DataError(
                        f"misaligned data: the ids of batch {b} differ between the sides; align the datasets (PSI) again"
                    )
                a_f = from_tensor(act.value)
                scores[idx] = model.top(model.bottom(tf.constant(x[idx])), tf.constant(a_f)).numpy()
                reporter.progress((b + 1) / len(bl), STAGE)
            expect(link.recv(timeout, "the follower's end of data"), "done")
            out = Path(cfg.output_dir) / "score" / "scores.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.tmp"
            pd.DataFrame({cfg.data.id_column: table.ids, "score": scores}).to_csv(tmp, index=False)
            tmp.replace(out)
            metrics = binary_metrics(table.labels, scores) if table.labels is not None else {}
            for k, v in metrics.items():
                reporter.metric(k, v, split="score")
            result = clean(
                {
                    "role": "leader",
                    "rows": n,
                    "scores_path": str(out),
                    "metrics": metrics,
                    "model_dir": str(model_dir),
                    "seconds": time.perf_counter() - t0,
                }
            )
            link.send(pb.LeaderMessage(done=pb.Done(rows=n)))
            link.close()
            return result
        except BaseException as exc:
            link.fail(exc)
            raise
    follower_link = FollowerLink(cfg, min(float(sp.get("connect_timeout_s", 600.0)), cfg.timeout_s))
    try:
        follower_link.send(pb.FollowerMessage(hello=mine))
        theirs = expect(follower_link.recv(timeout, "the leader's hello"), "hello")
        check_hello(mine, theirs)
        for b, idx in enumerate(bl):
            a = model.bottom(tf.constant(x[idx])).numpy()
            h = batch_hash(table.ids, idx) if b % every == 0 else b""
            follower_link.send(
                pb.FollowerMessage(
                    activations=pb.Activations(epoch=0, batch=b, split="score", value=to_tensor(a), ids_hash=h)
                )
            )
            reporter.progress((b + 1) / len(bl), STAGE)
        follower_link.send(pb.FollowerMessage(done=pb.Done(rows=n)))
        expect(follower_link.recv(timeout, "the leader's scores"), "done")
        follower_link.close()
        return {"role": "follower", "rows": n, "model_dir": str(model_dir), "seconds": time.perf_counter() - t0}
    except BaseException as exc:
        follower_link.fail(exc)
        raise
