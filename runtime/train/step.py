"""The ``train`` command: one side of vertical split-NN training.

Per training batch ``k`` (rows chosen by a seeded shuffle both sides compute):

1. the follower sends its bottom model's activations ``a_f[k]``;
2. the leader runs its bottom and top models and the loss, sends back
   ``dL/da_f[k]`` at once, then applies its own update while the follower works;
3. the follower applies ``dL/da_f[k]`` to its bottom model and, in the same
   compiled call, computes ``a_f[k+1]`` with the updated weights.

So the result is exactly that of training the whole network in one place
(no stale gradients); see docs/training.md for the protocol and the figures.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsite_proto.runtime.v1 import train_pb2 as pb
from runtime.common import check_hello as common_check_hello
from runtime.common import clean, expect
from runtime.config import JobConfig
from runtime.errors import DataError, PeerError
from runtime.report import Reporter
from runtime.train.data import (
    Preprocessor,
    Table,
    aligned_path,
    batch_hash,
    batches,
    epoch_order,
    ids_digest,
    read_table,
    split_for_training,
)
from runtime.train.link import PROTOCOL_VERSION, FollowerLink, LeaderLink, from_tensor, to_tensor
from runtime.train.metrics import binary_metrics
from runtime.train.params import TrainParams, parse_train_params

STAGE = "train"


@dataclass
class Prepared:
    table: Table
    x: np.ndarray
    y: np.ndarray | None
    train_idx: np.ndarray
    es_idx: np.ndarray  # early-stopping rows (empty when early stopping is off)
    val_idx: np.ndarray
    pre: Preprocessor
    digest: bytes


def prepare(cfg: JobConfig, params: TrainParams, reporter: Reporter) -> Prepared:
    path = aligned_path(cfg, params.data_path)
    reporter.log(f"train: reading {path}")
    table = read_table(path, cfg.data.id_column, cfg.data.label_column, need_label=cfg.is_leader)
    n = len(table.ids)
    train_idx, es_idx, val_idx = split_for_training(n, params.validation_fraction, es_fraction(params), params.seed)
    pre = Preprocessor.fit(table.features, train_idx, params.max_categories)
    x = pre.transform(table.features)
    reporter.log(
        f"train: {n} rows ({len(train_idx)} train, {len(es_idx)} early stopping, {len(val_idx)} validation), "
        f"{table.features.shape[1]} columns -> {x.shape[1]} inputs"
    )
    return Prepared(table, x, table.labels, train_idx, es_idx, val_idx, pre, ids_digest(table.ids))


def es_fraction(params: TrainParams) -> float:
    """Rows carved from the training part for early stopping (none when it is off)."""
    return params.early_stopping_fraction if params.early_stopping_patience else 0.0


def kept_metrics(history: list[dict[str, Any]], best_epoch: int) -> dict[str, Any]:
    """The metrics of the epoch whose weights were exported."""
    kept = next((h for h in history if h.get("epoch") == best_epoch), history[-1] if history else {})
    out = {"train": kept.get("train", {}), "validation": kept.get("validation", {})}
    if kept.get("early_stopping"):
        out["early_stopping"] = kept["early_stopping"]
    return out


def make_hello(
    cfg: JobConfig,
    params: TrainParams | None,
    prep_rows: int,
    digest: bytes,
    mode: str,
    ckpt_epochs: list[int],
    act_dim: int = 0,
) -> pb.Hello:
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        job_id=cfg.job_id,
        role=cfg.role,
        mode=mode,
        rows=prep_rows,
        ids_digest=digest,
        shared_params=params.shared() if params else "",
        checkpoint_epochs=ckpt_epochs,
        activation_dim=act_dim,
    )


def check_hello(mine: pb.Hello, theirs: pb.Hello) -> None:
    """Both sides run this on the other's hello; a mismatch fails the job on both."""
    common_check_hello(mine, theirs, version=PROTOCOL_VERSION, protocol="training", stage="train")


def export_half(half: Any, prep: Prepared, cfg: JobConfig, params: TrainParams, path: Path) -> None:
    from runtime.train.nn import write_dir_atomically

    meta = {
        "format": "fedsite-splitnn/1",
        "job_id": cfg.job_id,
        "role": cfg.role,
        "id_column": cfg.data.id_column,
        "label_column": cfg.data.label_column if cfg.is_leader else None,
        "input_dim": half.input_dim,
        "activation_dim": half.out_dim,
        "peer_activation_dim": half.peer_dim,
        "params": {k: v for k, v in asdict(params).items() if k != "extra"},
    }

    def fill(tmp: Path) -> None:
        half.export(tmp)
        (tmp / "preprocess.json").write_text(prep.pre.to_json())
        (tmp / "fedsite.json").write_text(json.dumps(meta, indent=2))

    write_dir_atomically(path, fill)


def summarise(history: list[dict[str, Any]]) -> dict[str, Any]:
    if not history:
        return {"epoch_s": None, "samples_per_s": None}
    epoch_s = float(np.median([h["epoch_s"] for h in history]))
    rows = history[-1].get("train_rows", 0)
    return {"epoch_s": epoch_s, "samples_per_s": rows / epoch_s if epoch_s > 0 else None}


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    params = parse_train_params(cfg.train)
    from runtime.train.nn import configure_threads

    configure_threads(params)
    # A re-run (or a resume) is not finished until it writes a new result.
    (Path(cfg.output_dir) / "train" / "result.json").unlink(missing_ok=True)
    prep = prepare(cfg, params, reporter)
    if cfg.is_leader:
        return _leader(cfg, params, prep, reporter)
    return _follower(cfg, params, prep, reporter)


def restore_best(
    half: Any, ckpts: Any, state: dict[str, Any], best_arrays: dict[str, np.ndarray] | None, reporter: Reporter
) -> None:
    """Put the kept epoch's weights back before export (both sides run this for the same epoch)."""
    best, last = state.get("best_epoch") or state["epoch"], state["epoch"]
    state["best_epoch"] = best
    if not best or best == last:
        return
    if best_arrays is None:  # resumed after the best epoch: its checkpoint was kept for this
        if best not in ckpts.epochs():
            raise PeerError(f"early stopping keeps epoch {best} but this side has no checkpoint for it")
        best_arrays, _ = ckpts.load(best)
    half.load_arrays(best_arrays)
    reporter.log(f"train: keeping the weights of epoch {best} (early stopping's best), not of the last epoch {last}")


# -- leader ----------------------------------------------------------------------
def _leader(cfg: JobConfig, params: TrainParams, prep: Prepared, reporter: Reporter) -> dict[str, Any]:
    from runtime.train.nn import Checkpoints, Half

    out = Path(cfg.output_dir) / "train"
    ckpts = Checkpoints(out / "checkpoint")
    link = LeaderLink(cfg)
    reporter.log(f"train: leader listening on {cfg.listen_address}, waiting for the follower")
    timeout = params.peer_timeout_s
    try:
        link.accept(min(params.connect_timeout_s, cfg.timeout_s))
        theirs = expect(link.recv(timeout, "the follower's hello"), "hello")
        mine = make_hello(cfg, params, len(prep.table.ids), prep.digest, "train", ckpts.epochs())
        link.send(pb.LeaderMessage(hello=mine))
        check_hello(mine, theirs)
        if theirs.activation_dim <= 0:
            raise PeerError("the follower announced no activation width")
        common = set(ckpts.epochs()) & set(theirs.checkpoint_epochs)
        start = max(common, default=0)
        link.send(pb.LeaderMessage(welcome=pb.Welcome(start_epoch=start, share_metrics=params.share_metrics)))
        half = Half("leader", prep.x.shape[1], params, train_rows=len(prep.train_idx), peer_dim=theirs.activation_dim)
        state: dict[str, Any] = {
            "epoch": 0,
            "stopped": False,
            "best": None,
            "best_epoch": 0,
            "wait": 0,
            "history": [],
            "step": 0,
        }
        best_arrays: dict[str, np.ndarray] | None = None
        if start:
            arrays, state = ckpts.load(start)
            half.load_arrays(arrays)
            reporter.log(f"train: resuming after epoch {start} from the checkpoints of both sides")
        x, y = prep.x, prep.y
        assert y is not None
        ids = prep.table.ids
        every = params.check_alignment_every
        n_train, val_idx, es_idx = len(prep.train_idx), prep.val_idx, prep.es_idx
        val_batches = batches(val_idx, params.batch_size)
        es_batches = batches(es_idx, params.batch_size)
        n_batches = math.ceil(n_train / params.batch_size)
        total = params.epochs * (n_batches + len(val_batches) + len(es_batches))
        step = state["step"]
        for epoch in range(start, params.epochs):
            if state["stopped"]:
                break
            t0 = time.perf_counter()
            order = epoch_order(prep.train_idx, params.seed, epoch)
            preds = np.empty(n_train, np.float32)
            noise_rng = np.random.default_rng([params.seed, 13, epoch])
            loss_sum, loss_n, pos, wait_s = 0.0, 0, 0, 0.0
            for b, idx in enumerate(batches(order, params.batch_size)):
                tw = time.perf_counter()
                act = expect(link.recv(timeout, f"activations of epoch {epoch + 1} batch {b}"), "activations")
                wait_s += time.perf_counter() - tw
                _check_batch(act, epoch, b, "train", ids, idx, every)
                a_peer = from_tensor(act.value)
                if a_peer.shape != (len(idx), theirs.activation_dim):
                    raise PeerError(f"the follower sent activations of shape {a_peer.shape} for a batch of {len(idx)}")
                g, loss, p, grads = half.leader_step(x[idx], y[idx], a_peer)
                g = g.numpy()
                if params.gradient_noise_stddev > 0:
                    g = g + noise_rng.normal(0.0, params.gradient_noise_stddev, g.shape).astype(np.float32)
                loss_v = float(loss)
                link.send(
                    pb.LeaderMessage(
                        gradients=pb.Gradients(
                            epoch=epoch,
                            batch=b,
                            value=to_tensor(g),
                            loss=loss_v if params.share_metrics else float("nan"),
                        )
                    )
                )
                half.apply(grads)  # overlaps with the follower's backward pass
                preds[pos : pos + len(idx)] = p.numpy()
                pos += len(idx)
                step += 1
                loss_sum += loss_v
                loss_n += 1
                if step % params.log_every_steps == 0:
                    reporter.metric("loss", loss_sum / loss_n, step=step, epoch=epoch + 1, split="train")
                    loss_sum, loss_n = 0.0, 0
                reporter.progress((epoch * (n_batches + len(val_batches) + len(es_batches)) + b + 1) / total, STAGE)
            train_s = time.perf_counter() - t0

            def predict_split(split: str, split_batches: list[np.ndarray], rows: int, epoch: int = epoch) -> np.ndarray:
                out = np.empty(rows, np.float32)
                at = 0
                for b, idx in enumerate(split_batches):
                    act = expect(
                        link.recv(timeout, f"{split} activations of epoch {epoch + 1} batch {b}"), "activations"
                    )
                    _check_batch(act, epoch, b, split, ids, idx, every)
                    out[at : at + len(idx)] = half.predict(x[idx], from_tensor(act.value)).numpy()
                    at += len(idx)
                return out

            vpreds = predict_split("validation", val_batches, len(val_idx))
            epreds = predict_split("early_stopping", es_batches, len(es_idx))
            metrics = {
                "train": binary_metrics(y[order], preds),
                "validation": binary_metrics(y[val_idx], vpreds) if len(val_idx) else {},
            }
            if len(es_idx):
                metrics["early_stopping"] = binary_metrics(y[es_idx], epreds)
            stop = False
            if params.early_stopping_patience:
                # The early-stopping rows when there are any (never the reported validation rows then).
                monitored = metrics.get("early_stopping") or metrics["validation"] or metrics["train"]
                monitor = monitored["loss"]
                if state["best"] is None or monitor < state["best"]:
                    state["best"], state["wait"], state["best_epoch"] = monitor, 0, epoch + 1
                else:
                    state["wait"] += 1
                stop = state["wait"] >= params.early_stopping_patience
            else:
                state["best_epoch"] = epoch + 1  # without early stopping the last epoch is kept
            if params.early_stopping_patience and state["best_epoch"] == epoch + 1:
                best_arrays = half.state_arrays()
            epoch_s = time.perf_counter() - t0
            flat = {f"{split}.{k}": v for split, m in metrics.items() for k, v in m.items()}
            flat.update({"epoch_s": epoch_s, "train_s": train_s})
            link.send(
                pb.LeaderMessage(
                    epoch_end=pb.EpochEnd(
                        epoch=epoch,
                        stop=stop,
                        metrics=flat if params.share_metrics else {},
                        best_epoch=state["best_epoch"],
                    )
                )
            )
            for split, m in metrics.items():
                for k, v in m.items():
                    reporter.metric(k, v, step=step, epoch=epoch + 1, split=split)
            state["history"].append(
                clean(
                    {
                        "epoch": epoch + 1,
                        **metrics,
                        "epoch_s": epoch_s,
                        "train_s": train_s,
                        "wait_s": wait_s,
                        "train_rows": n_train,
                    }
                )
            )
            state.update(epoch=epoch + 1, stopped=stop, step=step)
            ckpts.save(epoch + 1, half.state_arrays(), state, best=state["best_epoch"])
            reporter.log(
                f"train: epoch {epoch + 1}/{params.epochs} {epoch_s:.2f} s, loss {metrics['train']['loss']:.4f}, "
                f"validation auc {metrics['validation'].get('auc', float('nan')):.4f}{', early stop' if stop else ''}"
            )
        restore_best(half, ckpts, state, best_arrays, reporter)
        model_dir = out / "model"
        export_half(half, prep, cfg, params, model_dir)
        expect(link.recv(timeout, "the follower's export"), "done")
        result = {
            "role": "leader",
            "job_id": cfg.job_id,
            "metrics": kept_metrics(state["history"], state["best_epoch"]),
            "best_epoch": state["best_epoch"],
            "history": state["history"],
            "model_dir": str(model_dir),
            "epochs": state["epoch"],
            "rows": len(prep.table.ids),
            "train_rows": n_train,
            "early_stopping_rows": len(es_idx),
            "validation_rows": len(val_idx),
            "resumed_from": start,
            "stopped_early": state["stopped"],
            "share_metrics": params.share_metrics,
            **summarise(state["history"]),
        }
        result = clean(result)
        from runtime.train.nn import write_file_atomically

        write_file_atomically(out / "result.json", json.dumps(result, indent=2))
        done_metrics = {f"{s}.{k}": v for s, m in result["metrics"].items() for k, v in m.items() if v is not None}
        link.send(
            pb.LeaderMessage(
                done=pb.Done(rows=len(prep.table.ids), metrics=done_metrics if params.share_metrics else {})
            )
        )
        reporter.progress(1.0, STAGE)
        link.close()
        return result
    except BaseException as exc:
        link.fail(exc)
        raise


def _check_batch(
    act: pb.Activations, epoch: int, b: int, split: str, ids: np.ndarray, idx: np.ndarray, every: int
) -> None:
    if act.epoch != epoch or act.batch != b or act.split != split:
        raise PeerError(
            f"protocol error: expected {split} batch {b} of epoch {epoch + 1}, the follower sent {act.split} batch {act.batch} of epoch {act.epoch + 1}"
        )
    if b % every == 0 and act.ids_hash != batch_hash(ids, idx):
        raise DataError(
            f"misaligned data: the ids of {split} batch {b} in epoch {epoch + 1} differ between the sides; align the datasets (PSI) again"
        )


# -- follower --------------------------------------------------------------------
def _follower(cfg: JobConfig, params: TrainParams, prep: Prepared, reporter: Reporter) -> dict[str, Any]:
    from runtime.train.nn import Checkpoints, Half, write_file_atomically

    out = Path(cfg.output_dir) / "train"
    ckpts = Checkpoints(out / "checkpoint")
    half = Half("follower", prep.x.shape[1], params, train_rows=len(prep.train_idx))
    reporter.log(f"train: follower connecting to the leader at {cfg.peer_address}")
    link = FollowerLink(cfg, min(params.connect_timeout_s, cfg.timeout_s))
    timeout = params.peer_timeout_s
    try:
        mine = make_hello(cfg, params, len(prep.table.ids), prep.digest, "train", ckpts.epochs(), act_dim=half.out_dim)
        link.send(pb.FollowerMessage(hello=mine))
        theirs = expect(link.recv(timeout, "the leader's hello"), "hello")
        check_hello(mine, theirs)
        welcome = expect(link.recv(timeout, "the leader's welcome"), "welcome")
        start = welcome.start_epoch
        state: dict[str, Any] = {"epoch": 0, "stopped": False, "best_epoch": 0, "history": []}
        best_arrays: dict[str, np.ndarray] | None = None
        if start:
            if start not in ckpts.epochs():
                raise PeerError(f"the leader resumes after epoch {start} but this side has no checkpoint for it")
            arrays, state = ckpts.load(start)
            half.load_arrays(arrays)
            reporter.log(f"train: resuming after epoch {start} from the checkpoints of both sides")
        x, ids, every = prep.x, prep.table.ids, params.check_alignment_every
        val_batches = batches(prep.val_idx, params.batch_size)
        es_batches = batches(prep.es_idx, params.batch_size)
        n_train = len(prep.train_idx)
        n_batches = math.ceil(n_train / params.batch_size)
        total = params.epochs * (n_batches + len(val_batches) + len(es_batches))
        step = 0

        def send_act(epoch: int, b: int, split: str, idx: np.ndarray, a: Any) -> None:
            h = batch_hash(ids, idx) if b % every == 0 else b""
            link.send(
                pb.FollowerMessage(
                    activations=pb.Activations(
                        epoch=epoch, batch=b, split=split, value=to_tensor(a.numpy()), ids_hash=h
                    )
                )
            )

        for epoch in range(start, params.epochs):
            if state["stopped"]:
                break
            t0 = time.perf_counter()
            bl = batches(epoch_order(prep.train_idx, params.seed, epoch), params.batch_size)
            xb = x[bl[0]]
            a, stash = half.forward_stash(xb)
            send_act(epoch, 0, "train", bl[0], a)
            loss_sum, loss_n = 0.0, 0
            for b in range(len(bl)):
                grad = expect(link.recv(timeout, f"gradients of epoch {epoch + 1} batch {b}"), "gradients")
                if grad.epoch != epoch or grad.batch != b:
                    raise PeerError(
                        f"protocol error: expected gradients of batch {b} of epoch {epoch + 1}, got batch {grad.batch} of epoch {grad.epoch + 1}"
                    )
                g = from_tensor(grad.value)
                if b + 1 < len(bl):
                    nxt = bl[b + 1]
                    xn = x[nxt]
                    a, stash = half.backward_forward(xb, stash, g, xn)
                    send_act(epoch, b + 1, "train", nxt, a)
                    xb = xn
                else:
                    half.backward_stash(xb, stash, g)
                step += 1
                if params.share_metrics and not math.isnan(grad.loss):
                    loss_sum += grad.loss
                    loss_n += 1
                    if step % params.log_every_steps == 0:
                        reporter.metric("loss", loss_sum / loss_n, step=step, epoch=epoch + 1, split="train")
                        loss_sum, loss_n = 0.0, 0
                reporter.progress((epoch * (n_batches + len(val_batches) + len(es_batches)) + b + 1) / total, STAGE)
            for b, idx in enumerate(val_batches):
                send_act(epoch, b, "validation", idx, half.forward(x[idx]))
            for b, idx in enumerate(es_batches):
                send_act(epoch, b, "early_stopping", idx, half.forward(x[idx]))
            end = expect(link.recv(timeout, f"the end of epoch {epoch + 1}"), "epoch_end")
            if end.epoch != epoch:
                raise PeerError(f"protocol error: the leader ended epoch {end.epoch + 1}, expected {epoch + 1}")
            epoch_s = time.perf_counter() - t0
            metrics: dict[str, dict[str, float]] = {"train": {}, "validation": {}}
            if len(prep.es_idx):
                metrics["early_stopping"] = {}
            for key, v in end.metrics.items():
                split, _, name = key.partition(".")
                if split in metrics and name:
                    metrics[split][name] = v
                    reporter.metric(name, v, step=step, epoch=epoch + 1, split=split)
            state["history"].append(clean({"epoch": epoch + 1, **metrics, "epoch_s": epoch_s, "train_rows": n_train}))
            if not 1 <= end.best_epoch <= epoch + 1:
                raise PeerError(
                    f"protocol error: the leader names epoch {end.best_epoch} the best after epoch {epoch + 1}"
                )
            if params.early_stopping_patience and end.best_epoch == epoch + 1:
                best_arrays = half.state_arrays()
            state.update(epoch=epoch + 1, stopped=end.stop, best_epoch=end.best_epoch)
            ckpts.save(epoch + 1, half.state_arrays(), state, best=end.best_epoch)
            reporter.log(
                f"train: epoch {epoch + 1}/{params.epochs} {epoch_s:.2f} s{', early stop' if end.stop else ''}"
            )
        restore_best(half, ckpts, state, best_arrays, reporter)
        model_dir = out / "model"
        export_half(half, prep, cfg, params, model_dir)
        link.send(pb.FollowerMessage(done=pb.Done(rows=len(ids))))
        expect(link.recv(timeout, "the leader's export"), "done")
        result = clean(
            {
                "role": "follower",
                "job_id": cfg.job_id,
                "metrics": kept_metrics(state["history"], state["best_epoch"]),
                "best_epoch": state["best_epoch"],
                "history": state["history"],
                "model_dir": str(model_dir),
                "epochs": state["epoch"],
                "rows": len(ids),
                "train_rows": n_train,
                "early_stopping_rows": len(prep.es_idx),
                "validation_rows": len(prep.val_idx),
                "resumed_from": start,
                "stopped_early": state["stopped"],
                "share_metrics": welcome.share_metrics,
                **summarise(state["history"]),
            }
        )
        write_file_atomically(out / "result.json", json.dumps(result, indent=2))
        reporter.progress(1.0, STAGE)
        link.close()
        return result
    except BaseException as exc:
        link.fail(exc)
        raise
