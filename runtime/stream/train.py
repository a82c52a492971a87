"""The ``stream_train`` step: continual split-NN training on the blocks a stream join commits.

The join (``stream_join``, runtime/stream/) writes each committed block on both sides as
``<output_dir>/stream/blocks/<seq:08d>.parquet`` (columns ``example_id``, ``event_time``, then
that side's columns; the leader's hold the label) with its manifest ``<seq:08d>.json``
(``{"seq", "count", "id_digest", "event_time_min", "event_time_max", "source_offset",
"committed": true}``), written only once the block is committed on both sides, in the same
row order on both. This step follows those manifests; it never reads an uncommitted block.

Rounds (protocol: protos/fedsite_proto/runtime/v1/stream_train.proto):

1. the leader waits for new committed blocks (sending ``Idle`` so the follower knows it lives),
   names the range (``Round``) and the follower confirms it holds the same blocks (digest of
   the manifests' id digests);
2. the rows of the range's older blocks are trained on once, batch by batch, as the ``train``
   step does (activations forward, gradients back), continuing from the last round's weights;
3. **progressive validation**: the round's new blocks are scored by the model trained on
   everything before them, then trained on (older blocks first, then the newest; the shuffle of
   each part is seeded, the same on both sides). The scores since the last version are pooled:
   the pool's loss, AUC, KS and accuracy are each round's progressive metrics and what the next
   version reports (one small block alone often holds a single class and has no AUC). The pool
   starts again after each version, and after a restart;
4. both sides checkpoint the round (weights, optimizer, preprocessing, offsets); every
   ``publish_every_blocks`` blocks, or ``publish_every_minutes`` with new blocks, the leader
   declares a new version and both export their half to ``stream/versions/v<NNNN>/`` and
   report a ``stream_version`` result, which each installation registers as a model version
   (same id on both sides, derived from the job id and the version number; see
   apps/registry/services.py).

A restarted runtime resumes from the last round both sides checkpointed. The preprocessing
(standardisation, vocabularies) is learned on the first round's rows and then kept, so every
version reads the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsite_proto.runtime.v1 import stream_train_pb2 as pb
from fedsite_proto.runtime.v1 import stream_train_pb2_grpc as pb_grpc
from fedsite_proto.runtime.v1 import train_pb2 as tpb
from runtime.config import JobConfig
from runtime.errors import ConfigError, DataError, PeerError
from runtime.report import Reporter
from runtime.train.data import Preprocessor, batches, epoch_order
from runtime.train.link import FollowerLink, LeaderLink, failure_of, from_tensor, to_tensor
from runtime.train.metrics import binary_metrics
from runtime.train.params import TrainParams, parse_train_params

STAGE = "stream_train"
PROTOCOL_VERSION = 1
ID_COLUMN = "example_id"
TIME_COLUMN = "event_time"
_MANIFEST = re.compile(r"^(\d{8})\.json$")
IDLE_EVERY_S = 5.0
POLL_S = 0.25


@dataclass(frozen=True)
class StreamTrainParams:
    """The ``stream`` keys this step reads (the join reads the others)."""

    # Rows a block holds at most (the join's max_batch_events): the L2 penalty is per row of a block.
    block_rows: int = 4096
    publish_every_blocks: int = 10
    publish_every_minutes: float = 0.0
    # Not a ticket parameter: a run from the shell or a test stops after this many versions (0: never).
    stop_after_versions: int = 0

    def shared(self) -> dict[str, Any]:
        return {"publish_every_blocks": self.publish_every_blocks, "publish_every_minutes": self.publish_every_minutes}


def parse_stream_train_params(raw: dict[str, Any] | None) -> StreamTrainParams:
    raw = dict(raw or {})

    def number(key: str, default: float, lo: float, hi: float, integer: bool) -> Any:
        v = raw.get(key, default)
        if v is None:
            return default
        ok = not isinstance(v, bool) and isinstance(v, int if integer else int | float)
        if not ok or not (lo <= v <= hi) or (not integer and not math.isfinite(v)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"stream.{key}: must be {kind} from {lo:g} to {hi:g}, got {v!r}")
        return int(v) if integer else float(v)

    return StreamTrainParams(
        block_rows=number("max_batch_events", 4096, 1, 100_000_000, True),
        publish_every_blocks=number("publish_every_blocks", 10, 1, 10_000_000, True),
        publish_every_minutes=number("publish_every_minutes", 0.0, 0.0, 1e7, False),
        stop_after_versions=number("stop_after_versions", 0, 0, 10_000_000, True),
    )


# -- committed blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One committed block: its data file and manifest."""

    seq: int
    path: Path
    manifest: dict[str, Any]

    @property
    def count(self) -> int:
        return int(self.manifest.get("count", 0))


def blocks_dir(cfg: JobConfig) -> Path:
    return Path(cfg.output_dir) / "stream" / "blocks"


def committed_blocks(root: Path, after: int) -> list[Block]:
    """Committed blocks with seq > `after`, in order, up to the first gap (blocks commit in order)."""
    if not root.is_dir():
        return []
    found: list[Block] = []
    for entry in sorted(root.iterdir()):
        m = _MANIFEST.match(entry.name)
        if not m or int(m.group(1)) <= after:
            continue
        try:
            manifest = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break  # being replaced: the next look sees it whole
        if not isinstance(manifest, dict) or manifest.get("committed") is not True:
            break
        seq = int(m.group(1))
        if found and seq != found[-1].seq + 1:
            break
        found.append(Block(seq, root / f"{seq:08d}.parquet", manifest))
    return found


def blocks_digest(blocks: list[Block]) -> bytes:
    h = hashlib.sha256()
    for b in blocks:
        h.update(f"{b.seq}:{b.count}:{b.manifest.get('id_digest', '')}\n".encode())
    return h.digest()


def read_blocks(blocks: list[Block], label_column: str | None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The blocks' rows in order: this side's feature columns, and the 0/1 labels (leader)."""
    frames = []
    for b in blocks:
        try:
            df = pd.read_parquet(b.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; name the block
            raise DataError(f"stream: cannot read block {b.path.name}: {exc}") from None
        if len(df) != b.count:
            raise DataError(f"stream: block {b.path.name} has {len(df)} rows, its manifest says {b.count}")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if ID_COLUMN not in df.columns:
        raise DataError(f"stream: the blocks have no {ID_COLUMN!r} column")
    labels = None
    drop = [c for c in (ID_COLUMN, TIME_COLUMN) if c in df.columns]
    if label_column is not None:
        if label_column not in df.columns:
            raise DataError(
                f"stream: the leader's events carry no label column {label_column!r} "
                f"(columns: {', '.join(map(str, df.columns[:10]))})"
            )
        y = pd.to_numeric(df[label_column], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
            raise DataError(f"stream: label column {label_column!r} must hold 0 or 1 in every event")
        labels = y.astype(np.float32)
        drop.append(label_column)
    features = df.drop(columns=drop)
    if features.shape[1] == 0:
        raise DataError("stream: this side's events have no feature columns besides the id, time and label")
    return features, labels


# -- the link --------------------------------------------------------------------------------


class StreamLeaderLink(LeaderLink):
    """The leader's end, on the port after the join's (see `train_address`)."""

    def _register(self, server: Any) -> None:
        pb_grpc.add_StreamTrainServicer_to_server(_Servicer(self), server)

    def _failure(self, exc: BaseException) -> Any:
        return pb.StreamTrainLeaderMessage(failure=failure_of(exc))


class _Servicer(pb_grpc.StreamTrainServicer):
    def __init__(self, link: StreamLeaderLink) -> None:
        self.link = link

    def Exchange(self, request_iterator, context):  # noqa: N802 - gRPC method name
        yield from self.link._serve(request_iterator, context)


class StreamFollowerLink(FollowerLink):
    def _open_call(self, channel: Any) -> Any:
        return pb_grpc.StreamTrainStub(channel).Exchange(self._requests())

    def _failure(self, exc: BaseException) -> Any:
        return pb.StreamTrainFollowerMessage(failure=failure_of(exc))


def train_address(address: str, cfg: JobConfig) -> str:
    """Training listens one port above the join when both run in one job (the launcher reserves two)."""
    if "stream_join" not in cfg.steps:
        return address
    host, _, port = address.rpartition(":")
    try:
        return f"{host}:{int(port) + 1}"
    except ValueError:
        raise ConfigError(f"address {address!r}: no port") from None


def expect(msg: Any, body: str) -> Any:
    got = msg.WhichOneof("body")
    if got != body:
        raise PeerError(f"protocol error: expected {body} from the partner, got {got}")
    return getattr(msg, body)


# -- both sides ------------------------------------------------------------------------------


def _shared(params: TrainParams, sp: StreamTrainParams) -> str:
    return json.dumps({"train": json.loads(params.shared()), "stream": sp.shared()}, sort_keys=True)


def _hello(cfg: JobConfig, params: TrainParams, sp: StreamTrainParams, rounds: list[int]) -> pb.StreamHello:
    return pb.StreamHello(
        protocol_version=PROTOCOL_VERSION,
        job_id=cfg.job_id,
        role=cfg.role,
        shared_params=_shared(params, sp),
        checkpoint_rounds=rounds,
        activation_dim=params.bottom_layers[-1] if not cfg.is_leader else 0,
    )


def _check_hello(mine: pb.StreamHello, theirs: pb.StreamHello) -> None:
    if theirs.protocol_version != PROTOCOL_VERSION:
        raise PeerError(f"the partner speaks stream training protocol {theirs.protocol_version}, this side 1")
    if theirs.role == mine.role:
        raise ConfigError(f"role: both sides are configured as {mine.role}")
    if theirs.job_id != mine.job_id:
        raise ConfigError(f"job_id: this side runs job {mine.job_id}, the partner job {theirs.job_id}")
    if theirs.shared_params != mine.shared_params:
        raise ConfigError(
            f"train/stream: parameters differ between the sides ({mine.shared_params} here, {theirs.shared_params} there)"
        )


class _Trainer:
    """What both sides keep between rounds: the half, the preprocessing, the counters; on disk each round."""

    def __init__(self, cfg: JobConfig, params: TrainParams, sp: StreamTrainParams, reporter: Reporter) -> None:
        from runtime.train.nn import Checkpoints

        self.cfg, self.params, self.sp, self.reporter = cfg, params, sp, reporter
        self.root = Path(cfg.output_dir) / "stream"
        self.ckpts = Checkpoints(self.root / "train-checkpoint")
        self.half: Any = None
        self.pre: Preprocessor | None = None
        self.peer_dim = 0
        self.state: dict[str, Any] = {
            "round": 0,
            "last_seq": -1,
            "version": 0,
            "blocks_since_publish": 0,
            "last_publish_at": time.time(),
            "rows_trained": 0,
            "pre": None,
            "versions": [],
        }

    def resume(self, start: int) -> None:
        if not start:
            return
        if start not in self.ckpts.epochs():
            raise PeerError(f"the partner resumes after round {start} but this side has no checkpoint for it")
        arrays, self.state = self.ckpts.load(start)
        if self.state.get("pre"):
            self.pre = Preprocessor.from_json(self.state["pre"])
            self._build(self.pre.width)
            self.half.load_arrays(arrays)
        self.reporter.log(
            f"stream_train: resuming after round {start} (block {self.state['last_seq']}, "
            f"version {self.state['version']}) from the checkpoints of both sides"
        )

    def _build(self, input_dim: int) -> None:
        from runtime.train.nn import Half

        self.half = Half(self.cfg.role, input_dim, self.params, train_rows=self.sp.block_rows, peer_dim=self.peer_dim)

    def inputs(self, blocks: list[Block]) -> tuple[np.ndarray, np.ndarray | None]:
        features, labels = read_blocks(blocks, self.cfg.data.label_column if self.cfg.is_leader else None)
        if self.pre is None:
            self.pre = Preprocessor.fit(features, np.arange(len(features)), self.params.max_categories)
            self.state["pre"] = self.pre.to_json()
            self._build(self.pre.width)
            self.reporter.log(
                f"stream_train: inputs learned on the first {len(features)} rows: "
                f"{features.shape[1]} columns -> {self.pre.width} inputs"
            )
        return self.pre.transform(features), labels

    def finish_round(self, blocks: list[Block], rows: int, version: int, metrics: dict[str, float]) -> None:
        """Checkpoint the round; export and report a version if the leader declared one."""
        st = self.state
        st["round"] += 1
        st["last_seq"] = blocks[-1].seq
        st["rows_trained"] += rows
        st["blocks_since_publish"] += len(blocks)
        if version:
            model_dir = self.root / "versions" / f"v{version:04d}"
            self._export(model_dir, version)
            summary = {
                "version": version,
                "model_dir": str(model_dir),
                "round": st["round"],
                # every block since the last version (a version may span several rounds)
                "blocks": [blocks[-1].seq - st["blocks_since_publish"] + 1, blocks[-1].seq],
                "newest_block": blocks[-1].seq,
                "event_time_max": blocks[-1].manifest.get("event_time_max"),
                "rows_trained": st["rows_trained"],
                "metrics": {"progressive": _clean(metrics)},
                "published_at": time.time(),
            }
            st["version"] = version
            st["blocks_since_publish"] = 0
            st["last_publish_at"] = time.time()
            st["versions"] = [*st["versions"], {k: summary[k] for k in ("version", "round", "newest_block")}][-100:]
        assert self.half is not None
        self.ckpts.save(st["round"], self.half.state_arrays(), st)
        if version:
            self.reporter.result("stream_version", summary)
            self.reporter.log(
                f"stream_train: published version {version} after block {blocks[-1].seq} "
                f"(progressive AUC {metrics.get('auc', float('nan')):.4f})"
            )

    def _export(self, path: Path, version: int) -> None:
        from runtime.train.nn import write_dir_atomically

        assert self.half is not None and self.pre is not None
        half, pre, cfg = self.half, self.pre, self.cfg
        meta = {
            "format": "fedsite-splitnn/1",
            "job_id": cfg.job_id,
            "role": cfg.role,
            "id_column": ID_COLUMN,
            "label_column": cfg.data.label_column if cfg.is_leader else None,
            "input_dim": half.input_dim,
            "activation_dim": half.out_dim,
            "peer_activation_dim": half.peer_dim,
            "params": {k: v for k, v in asdict(self.params).items() if k != "extra"},
            "stream_version": version,
        }

        def fill(tmp: Path) -> None:
            half.export(tmp)
            (tmp / "preprocess.json").write_text(pre.to_json())
            (tmp / "fedsite.json").write_text(json.dumps(meta, indent=2))

        write_dir_atomically(path, fill)

    def summary(self) -> dict[str, Any]:
        st = self.state
        return {
            "rounds": st["round"],
            "last_block": st["last_seq"],
            "versions": st["version"],
            "rows_trained": st["rows_trained"],
        }


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in d.items()}


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    params = parse_train_params(cfg.train)
    sp = parse_stream_train_params(cfg.stream)
    if cfg.is_leader and not cfg.data.label_column:
        raise ConfigError("data.label_column: the leader of stream training holds the labels")
    from runtime.train.nn import configure_threads

    configure_threads(params)
    trainer = _Trainer(cfg, params, sp, reporter)
    if cfg.is_leader:
        return _leader(trainer)
    return _follower(trainer)


# -- leader ----------------------------------------------------------------------------------


def _wait_for_blocks(t: _Trainer, link: StreamLeaderLink) -> list[Block]:
    """The next blocks to train on (waiting as long as it takes; the follower hears we live)."""
    root = blocks_dir(t.cfg)
    last_idle = time.monotonic()
    while True:
        new = committed_blocks(root, t.state["last_seq"])
        want = max(1, t.sp.publish_every_blocks - t.state["blocks_since_publish"])
        if new:
            return new[:want]
        if time.monotonic() - last_idle >= IDLE_EVERY_S:
            link.send(pb.StreamTrainLeaderMessage(idle=pb.Idle(last_seq=t.state["last_seq"])))
            last_idle = time.monotonic()
        time.sleep(POLL_S)


def _leader(t: _Trainer) -> dict[str, Any]:
    cfg, params, sp, reporter = t.cfg, t.params, t.sp, t.reporter
    address = train_address(cfg.listen_address or "", cfg)
    link = StreamLeaderLink(replace(cfg, listen_address=address))
    reporter.log(f"stream_train: leader listening on {address}, waiting for the follower")
    timeout = params.peer_timeout_s
    try:
        link.accept(params.connect_timeout_s)
        theirs = expect(link.recv(timeout, "the follower's hello"), "hello")
        mine = _hello(cfg, params, sp, t.ckpts.epochs())
        link.send(pb.StreamTrainLeaderMessage(hello=mine))
        _check_hello(mine, theirs)
        if theirs.activation_dim <= 0:
            raise PeerError("the follower announced no activation width")
        t.peer_dim = theirs.activation_dim
        start = max(set(t.ckpts.epochs()) & set(theirs.checkpoint_rounds), default=0)
        link.send(
            pb.StreamTrainLeaderMessage(welcome=pb.StreamWelcome(start_round=start, share_metrics=params.share_metrics))
        )
        t.resume(start)
        pool_y: list[np.ndarray] = []  # labels and scores of the newest blocks since the last version
        pool_p: list[np.ndarray] = []
        while True:
            blocks = _wait_for_blocks(t, link)
            rnd = t.state["round"] + 1
            digest = blocks_digest(blocks)
            link.send(
                pb.StreamTrainLeaderMessage(
                    round=pb.Round(round=rnd, first_seq=blocks[0].seq, last_seq=blocks[-1].seq, blocks_digest=digest)
                )
            )
            ready = expect(link.recv(timeout, f"the follower's blocks of round {rnd}"), "ready")
            if ready.round != rnd or ready.blocks_digest != digest:
                raise DataError(
                    f"the follower's blocks {blocks[0].seq}..{blocks[-1].seq} differ from this side's "
                    "(count or id digest); the join's blocks must be the same on both sides"
                )
            x, y = t.inputs(blocks)
            assert y is not None and t.half is not None
            older, newest = _schedule(len(x), blocks[-1].count, t.params, rnd)
            # Progressive validation: the round's new blocks are scored before any training on them, and the
            # scores since the last version pooled (one small block alone often holds a single class: no AUC).
            pool_p.append(_leader_score(t, link, x, y, np.arange(len(x)), rnd))
            pool_y.append(y)
            _leader_train(t, link, x, y, rnd, older, 0)
            _leader_train(t, link, x, y, rnd, newest, len(older))
            metrics = binary_metrics(np.concatenate(pool_y), np.concatenate(pool_p))
            st = t.state
            due = st["blocks_since_publish"] + len(blocks) >= sp.publish_every_blocks or (
                sp.publish_every_minutes > 0 and time.time() - st["last_publish_at"] >= 60 * sp.publish_every_minutes
            )
            version = st["version"] + 1 if due else 0
            shared = {k: v for k, v in metrics.items() if math.isfinite(v)} if params.share_metrics else {}
            link.send(pb.StreamTrainLeaderMessage(round_end=pb.RoundEnd(round=rnd, version=version, metrics=shared)))
            for name, value in metrics.items():
                if math.isfinite(value):
                    reporter.metric(name, value, step=rnd, epoch=rnd, split="progressive")
            t.finish_round(blocks, len(x), version, metrics)
            if version:
                pool_y, pool_p = [], []
            if sp.stop_after_versions and st["version"] >= sp.stop_after_versions:
                return t.summary()
    except BaseException as exc:
        link.fail(exc)
        raise
    finally:
        link.close()


def _leader_score(
    t: _Trainer, link: StreamLeaderLink, x: np.ndarray, y: np.ndarray, rows: np.ndarray, rnd: int
) -> np.ndarray:
    """Progressive validation: the current model's scores of the newest block, before training on it."""
    preds = []
    for b, idx in enumerate(batches(rows, t.params.batch_size)):
        act = expect(link.recv(t.params.peer_timeout_s, f"activations to score round {rnd}"), "activations")
        if act.split != "validation" or act.epoch != rnd or act.batch != b:
            raise PeerError(f"protocol error: expected scoring batch {b} of round {rnd}, got {act.split} {act.batch}")
        a_peer = from_tensor(act.value)
        if a_peer.shape != (len(idx), t.peer_dim):
            raise PeerError(f"the follower sent activations of shape {a_peer.shape} for a batch of {len(idx)}")
        preds.append(t.half.predict(x[idx], a_peer).numpy())
    return np.concatenate(preds).reshape(-1)


def _schedule(rows: int, newest_rows: int, params: TrainParams, rnd: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A round's training batches (both sides compute the same): first the older blocks', then, once the
    newest block is scored, the newest block's; each part in a seeded shuffle."""
    cut = rows - newest_rows
    older = epoch_order(np.arange(cut), params.seed, rnd) if cut else np.arange(0)
    newest = epoch_order(np.arange(cut, rows), params.seed + 1, rnd)
    return batches(older, params.batch_size) if cut else [], batches(newest, params.batch_size)


def _leader_train(
    t: _Trainer, link: StreamLeaderLink, x: np.ndarray, y: np.ndarray, rnd: int, todo: list[np.ndarray], first: int
) -> None:
    params = t.params
    noise = np.random.default_rng([params.seed, 17, rnd, first])
    for b, idx in enumerate(todo, start=first):
        act = expect(link.recv(params.peer_timeout_s, f"activations of round {rnd} batch {b}"), "activations")
        if act.split != "train" or act.epoch != rnd or act.batch != b:
            raise PeerError(f"protocol error: expected training batch {b} of round {rnd}, got {act.split} {act.batch}")
        a_peer = from_tensor(act.value)
        if a_peer.shape != (len(idx), t.peer_dim):
            raise PeerError(f"the follower sent activations of shape {a_peer.shape} for a batch of {len(idx)}")
        g, loss, _p, grads = t.half.leader_step(x[idx], y[idx], a_peer)
        g = g.numpy()
        if params.gradient_noise_stddev > 0:
            g = g + noise.normal(0.0, params.gradient_noise_stddev, g.shape).astype(np.float32)
        link.send(
            pb.StreamTrainLeaderMessage(
                gradients=tpb.Gradients(
                    epoch=rnd,
                    batch=b,
                    value=to_tensor(g),
                    loss=float(loss) if params.share_metrics else float("nan"),
                )
            )
        )
        t.half.apply(grads)


# -- follower --------------------------------------------------------------------------------


def _wait_for_range(t: _Trainer, first: int, last: int) -> list[Block]:
    """This side's copies of blocks first..last (committed on both sides; ours may land a moment later)."""
    deadline = time.monotonic() + t.params.peer_timeout_s
    while True:
        blocks = [b for b in committed_blocks(blocks_dir(t.cfg), first - 1) if b.seq <= last]
        if blocks and blocks[0].seq == first and blocks[-1].seq == last:
            return blocks
        if time.monotonic() > deadline:
            raise DataError(
                f"the leader trains on blocks {first}..{last}, which this side has not committed "
                f"within {t.params.peer_timeout_s:.0f} s"
            )
        time.sleep(POLL_S)


def _follower(t: _Trainer) -> dict[str, Any]:
    cfg, params, sp, reporter = t.cfg, t.params, t.sp, t.reporter
    address = train_address(cfg.peer_address or "", cfg)
    reporter.log(f"stream_train: follower connecting to the leader at {address}")
    link = StreamFollowerLink(replace(cfg, peer_address=address), params.connect_timeout_s)
    timeout = params.peer_timeout_s
    try:
        mine = _hello(cfg, params, sp, t.ckpts.epochs())
        link.send(pb.StreamTrainFollowerMessage(hello=mine))
        theirs = expect(link.recv(timeout, "the leader's hello"), "hello")
        _check_hello(mine, theirs)
        welcome = expect(link.recv(timeout, "the leader's welcome"), "welcome")
        t.resume(welcome.start_round)
        while True:
            msg = link.recv(timeout, "the next round")
            if msg.WhichOneof("body") == "idle":
                continue
            rnd_msg = expect(msg, "round")
            rnd = rnd_msg.round
            if rnd != t.state["round"] + 1:
                raise PeerError(
                    f"protocol error: the leader starts round {rnd}, this side expects {t.state['round'] + 1}"
                )
            blocks = _wait_for_range(t, rnd_msg.first_seq, rnd_msg.last_seq)
            link.send(
                pb.StreamTrainFollowerMessage(ready=pb.RoundReady(round=rnd, blocks_digest=blocks_digest(blocks)))
            )
            x, _ = t.inputs(blocks)
            half = t.half
            older, newest = _schedule(len(x), blocks[-1].count, params, rnd)
            for b, idx in enumerate(batches(np.arange(len(x)), params.batch_size)):
                _send_act(link, rnd, b, "validation", half.forward(x[idx]))  # scored before training on it
            _follower_train(t, link, x, rnd, older, 0)
            _follower_train(t, link, x, rnd, newest, len(older))
            end = expect(link.recv(timeout, f"the end of round {rnd}"), "round_end")
            if end.round != rnd:
                raise PeerError(f"protocol error: the leader ended round {end.round}, expected {rnd}")
            metrics = dict(end.metrics)
            for name, value in metrics.items():
                reporter.metric(name, value, step=rnd, epoch=rnd, split="progressive")
            if end.version and end.version != t.state["version"] + 1:
                raise PeerError(
                    f"protocol error: the leader publishes version {end.version} after {t.state['version']}"
                )
            t.finish_round(blocks, len(x), end.version, metrics)
            if sp.stop_after_versions and t.state["version"] >= sp.stop_after_versions:
                return t.summary()
    except BaseException as exc:
        link.fail(exc)
        raise
    finally:
        link.close()


def _follower_train(
    t: _Trainer, link: StreamFollowerLink, x: np.ndarray, rnd: int, todo: list[np.ndarray], first: int
) -> None:
    for b, idx in enumerate(todo, start=first):
        xb = x[idx]
        _send_act(link, rnd, b, "train", t.half.forward(xb))
        grad = expect(link.recv(t.params.peer_timeout_s, f"gradients of round {rnd} batch {b}"), "gradients")
        if grad.epoch != rnd or grad.batch != b:
            raise PeerError(f"protocol error: expected gradients of round {rnd} batch {b}, got {grad.batch}")
        t.half.backward(xb, from_tensor(grad.value))


def _send_act(link: StreamFollowerLink, rnd: int, b: int, split: str, a: Any) -> None:
    link.send(
        pb.StreamTrainFollowerMessage(
            activations=tpb.Activations(epoch=rnd, batch=b, split=split, value=to_tensor(a.numpy()))
        )
    )
