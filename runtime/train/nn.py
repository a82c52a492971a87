"""The two halves of the split network: Keras models, compiled steps, checkpoints, export.

The follower's *bottom* model maps its features to an activation vector; the
leader's bottom model does the same with its own features, and its *top* model
maps both activation vectors, concatenated ``[leader, follower]``, to a logit.
The same builders make the centralized reference network (tests, benchmark), so
both start from identical seeded weights.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from runtime.train.params import TrainParams

_threads_set = False


def configure_threads(params: TrainParams) -> None:
    """Thread pools that suit small CPUs; only effective before TensorFlow's first op."""
    global _threads_set
    import tensorflow as tf

    if _threads_set:
        return
    _threads_set = True
    intra = params.intra_op_threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(params.inter_op_threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process (tests run both sides in one)


def _seed(seed: int, *parts: str | int) -> int:
    return zlib.crc32(json.dumps([seed, *parts]).encode()) & 0x7FFFFFFF


def build_mlp(
    input_dim: int,
    layers: tuple[int, ...],
    activation: str,
    seed: int,
    name: str,
    *,
    logit: bool = False,
    l2: float = 0.0,
):
    """Dense layers with seeded initialisers; `logit` adds a final linear unit.

    `l2` attaches Keras' L2 kernel regulariser (``l2 * sum(kernel**2)`` added to the
    mean loss by ``fit``): the centralized reference uses it; the split halves add
    the same penalty to their own gradients by hand (see :class:`Half`).
    """
    import keras

    reg = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input(shape=(input_dim,), name=f"{name}_in")
    h = inputs
    for i, width in enumerate(layers):
        h = keras.layers.Dense(
            width,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(seed, name, i)),
            kernel_regularizer=reg,
            name=f"{name}_{i}",
        )(h)
    if logit:
        h = keras.layers.Dense(
            1,
            kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(seed, name, "out")),
            kernel_regularizer=reg,
            name=f"{name}_out",
        )(h)
    return keras.Model(inputs, h, name=name)


def make_optimizer(params: TrainParams):
    import keras

    if params.optimizer == "sgd":
        return keras.optimizers.SGD(params.learning_rate)
    if params.optimizer == "adagrad":
        return keras.optimizers.Adagrad(params.learning_rate)
    return keras.optimizers.Adam(params.learning_rate)


def l2_per_row(params: TrainParams, train_rows: int) -> float:
    """`l2_regularization` weighs sum(w**2) against the loss summed over the training rows;
    per row, i.e. against the mean batch loss, it is divided by their number (it fades as data grows)."""
    return params.l2_regularization / max(train_rows, 1)


def build_centralized(
    leader_dim: int, follower_dim: int, leader: TrainParams, follower: TrainParams, *, train_rows: int
):
    """The whole network on joined data ``[leader features | follower features]``, same initial weights."""
    import keras

    lb = build_mlp(
        leader_dim,
        leader.bottom_layers,
        leader.activation,
        leader.seed,
        "leader_bottom",
        l2=l2_per_row(leader, train_rows),
    )
    fb = build_mlp(
        follower_dim,
        follower.bottom_layers,
        follower.activation,
        follower.seed,
        "follower_bottom",
        l2=l2_per_row(follower, train_rows),
    )
    top = build_mlp(
        leader.bottom_layers[-1] + follower.bottom_layers[-1],
        leader.top_layers,
        leader.activation,
        leader.seed,
        "top",
        logit=True,
        l2=l2_per_row(leader, train_rows),
    )
    x = keras.Input(shape=(leader_dim + follower_dim,))
    xl = keras.layers.Lambda(lambda t: t[:, :leader_dim])(x)
    xf = keras.layers.Lambda(lambda t: t[:, leader_dim:])(x)
    out = keras.layers.Activation("sigmoid")(top(keras.layers.Concatenate()([lb(xl), fb(xf)])))
    return keras.Model(x, out)


class Half:
    """This side's trainable models and optimizer, with compiled steps."""

    def __init__(self, role: str, input_dim: int, params: TrainParams, *, train_rows: int, peer_dim: int = 0) -> None:
        import tensorflow as tf

        self.role = role
        self.params = params
        self.input_dim = input_dim
        name = "leader_bottom" if role == "leader" else "follower_bottom"
        self.bottom = build_mlp(input_dim, params.bottom_layers, params.activation, params.seed, name)
        self.out_dim = params.bottom_layers[-1]
        self.top = None
        self.peer_dim = peer_dim
        if role == "leader":
            self.top = build_mlp(
                self.out_dim + peer_dim, params.top_layers, params.activation, params.seed, "top", logit=True
            )
        self.models = [m for m in (self.bottom, self.top) if m is not None]
        self.variables = [v for m in self.models for v in m.trainable_variables]
        self.optimizer = make_optimizer(params)
        self.optimizer.build(self.variables)
        x_spec = tf.TensorSpec([None, input_dim], tf.float32)
        a_spec = tf.TensorSpec([None, peer_dim or self.out_dim], tf.float32)
        y_spec = tf.TensorSpec([None], tf.float32)
        bottom, top, opt, variables = self.bottom, self.top, self.optimizer, self.variables
        # L2 on this side's kernels (not biases), as Keras' kernel regulariser would add it to the
        # loss of the whole network; each side penalises only its own weights, so training stays exact.
        l2 = l2_per_row(params, train_rows)
        own_kernels = [layer.kernel for m in self.models for layer in m.layers if hasattr(layer, "kernel")]

        if role == "leader":
            assert top is not None  # built above for the leader

            @tf.function(input_signature=[x_spec, y_spec, a_spec], jit_compile=False)
            def leader_step(x, y, a_peer):
                """Forward, loss, gradients; returns d loss / d a_peer first so it can be sent at once."""
                with tf.GradientTape() as tape:
                    tape.watch(a_peer)
                    logits = top(tf.concat([bottom(x, training=True), a_peer], axis=1), training=True)[:, 0]
                    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
                    total = loss + l2 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in own_kernels]) if l2 else loss
                grads = tape.gradient(total, [*variables, a_peer])
                return grads[-1], loss, tf.sigmoid(logits), grads[:-1]

            @tf.function
            def apply(grads):
                opt.apply(grads, variables)

            @tf.function(input_signature=[x_spec, a_spec])
            def predict(x, a_peer):
                return tf.sigmoid(top(tf.concat([bottom(x, training=False), a_peer], axis=1), training=False)[:, 0])

            self.leader_step, self.apply, self.predict = leader_step, apply, predict
        else:
            g_spec = tf.TensorSpec([None, self.out_dim], tf.float32)

            @tf.function(input_signature=[x_spec])
            def forward(x):
                return bottom(x, training=True)

            kernel_ids = {id(k) for k in own_kernels}

            def with_l2(grads):
                if not l2:
                    return grads
                return [
                    gr + 2.0 * l2 * v if id(v) in kernel_ids else gr for gr, v in zip(grads, variables, strict=True)
                ]

            @tf.function(input_signature=[x_spec, g_spec])
            def backward(x, g):
                with tf.GradientTape() as tape:
                    a = bottom(x, training=True)
                opt.apply(with_l2(tape.gradient(a, variables, output_gradients=g)), variables)

            # Training steps that keep the forward pass's intermediate values (`stash`) between
            # calls, so applying batch k's gradient needs no second forward pass of batch k.
            dense = [layer for layer in bottom.layers if hasattr(layer, "kernel")]
            kernels = [layer.kernel for layer in dense]
            biases = [layer.bias for layer in dense]
            acts = [layer.activation for layer in dense]
            var_ids = [id(v) for v in variables]
            order = [var_ids.index(id(v)) for layer in dense for v in (layer.kernel, layer.bias)]
            stash_spec = [tf.TensorSpec([None, w], tf.float32) for w in params.bottom_layers]

            def fwd_stash(x):
                h, zs = x, []
                for k, b, act in zip(kernels, biases, acts, strict=True):
                    z = tf.matmul(h, k) + b
                    zs.append(z)
                    h = act(z)
                return h, zs

            def grads_from_stash(x, zs, g):
                out = [None] * len(variables)
                dh = g
                for i in range(len(dense) - 1, -1, -1):
                    z = zs[i]
                    with tf.GradientTape() as t:
                        t.watch(z)
                        h = acts[i](z)
                    dz = t.gradient(h, z, output_gradients=dh)
                    h_in = x if i == 0 else acts[i - 1](zs[i - 1])
                    out[order[2 * i]] = tf.matmul(h_in, dz, transpose_a=True)
                    out[order[2 * i + 1]] = tf.reduce_sum(dz, axis=0)
                    if i > 0:
                        dh = tf.matmul(dz, kernels[i], transpose_b=True)
                return out

            @tf.function(input_signature=[x_spec])
            def forward_stash(x):
                return fwd_stash(x)

            @tf.function(input_signature=[x_spec, stash_spec, g_spec, x_spec])
            def backward_forward(x, zs, g, x_next):
                """Apply batch k's gradient, then compute batch k+1's activations with the new weights."""
                opt.apply(with_l2(grads_from_stash(x, zs, g)), variables)
                return fwd_stash(x_next)

            @tf.function(input_signature=[x_spec, stash_spec, g_spec])
            def backward_stash(x, zs, g):
                opt.apply(with_l2(grads_from_stash(x, zs, g)), variables)

            self.forward, self.backward = forward, backward
            self.forward_stash, self.backward_forward, self.backward_stash = (
                forward_stash,
                backward_forward,
                backward_stash,
            )

    # -- checkpoints ----------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for m in self.models:
            for i, w in enumerate(m.get_weights()):
                out[f"{m.name}/{i}"] = w
        for i, v in enumerate(self.optimizer.variables):
            out[f"optimizer/{i}"] = np.asarray(v.numpy())
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for m in self.models:
            m.set_weights([arrays[f"{m.name}/{i}"] for i in range(len(m.get_weights()))])
        for i, v in enumerate(self.optimizer.variables):
            v.assign(arrays[f"optimizer/{i}"])

    # -- export ---------------------------------------------------------------
    def export(self, path: Path) -> None:
        """Write this half as a TensorFlow SavedModel: `bottom(x)`; the leader also `top(a_leader, a_follower)`."""
        import tensorflow as tf
        from keras.export import ExportArchive

        archive = ExportArchive()
        archive.track(self.bottom)
        bottom = self.bottom
        archive.add_endpoint(
            "bottom",
            lambda x: bottom(x, training=False),
            input_signature=[tf.TensorSpec([None, self.input_dim], tf.float32, name="x")],
        )
        if self.top is not None:
            archive.track(self.top)
            top = self.top
            archive.add_endpoint(
                "top",
                lambda a_leader, a_follower: tf.sigmoid(
                    top(tf.concat([a_leader, a_follower], axis=1), training=False)[:, 0]
                ),
                input_signature=[
                    tf.TensorSpec([None, self.out_dim], tf.float32, name="a_leader"),
                    tf.TensorSpec([None, self.peer_dim], tf.float32, name="a_follower"),
                ],
            )
        archive.write_out(str(path), verbose=False)


def write_dir_atomically(final: Path, fill) -> None:
    """Build a directory next to `final` with `fill(tmp)`, then swap it in with renames."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- checkpoints on disk -------------------------------------------------------
class Checkpoints:
    """`checkpoint/epoch-0003/` holds weights, optimizer slots and state after 3 completed epochs."""

    keep = 3

    def __init__(self, root: Path) -> None:
        self.root = root

    def epochs(self) -> list[int]:
        if not self.root.exists():
            return []
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("epoch-") and (p / "state.json").exists():
                try:
                    out.append(int(p.name[6:]))
                except ValueError:
                    continue
        return sorted(out)

    def save(self, epoch: int, arrays: dict[str, np.ndarray], state: dict[str, Any], *, best: int = 0) -> None:
        """Write epoch `epoch`; keep the last `keep` epochs and the `best` one (early stopping restores it)."""

        def fill(tmp: Path) -> None:
            np.savez(tmp / "weights.npz", **{k.replace("/", "__"): v for k, v in arrays.items()})
            (tmp / "state.json").write_text(json.dumps(state))

        write_dir_atomically(self.root / f"epoch-{epoch:04d}", fill)
        for old in self.epochs()[: -self.keep]:
            if old != best:
                shutil.rmtree(self.root / f"epoch-{old:04d}", ignore_errors=True)

    def load(self, epoch: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        d = self.root / f"epoch-{epoch:04d}"
        with np.load(d / "weights.npz") as z:
            arrays = {k.replace("__", "/"): z[k] for k in z.files}
        return arrays, json.loads((d / "state.json").read_text())
