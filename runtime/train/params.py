"""The ``train`` block of a job config, validated, with defaults.

The defaults equal the ticket defaults of the control plane (apps/tickets/params.py;
a test keeps them equal). They were chosen on small imbalanced tabular data (a few
thousand rows, 5 % positives, numeric and categorical features split 1:2 between
the sides), see docs/training.md and ``bench/train.py --small``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.errors import ConfigError

OPTIMIZERS = ("adam", "sgd", "adagrad")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "leaky_relu")

# Tuned values (the rest of the defaults are plain choices); see the module docstring.
DEFAULTS: dict[str, Any] = {
    "bottom_layers": (32,),
    "top_layers": (8,),
    "learning_rate": 0.003,
    "l2_regularization": 12.0,
    "batch_size": 64,
    "epochs": 100,
    "validation_fraction": 0.1,
    "early_stopping_patience": 5,
    "early_stopping_fraction": 0.1,
}


@dataclass(frozen=True)
class TrainParams:
    bottom_layers: tuple[int, ...] = DEFAULTS["bottom_layers"]
    top_layers: tuple[int, ...] = DEFAULTS["top_layers"]
    activation: str = "relu"
    optimizer: str = "adam"
    learning_rate: float = DEFAULTS["learning_rate"]
    l2_regularization: float = DEFAULTS["l2_regularization"]
    batch_size: int = DEFAULTS["batch_size"]
    epochs: int = DEFAULTS["epochs"]
    validation_fraction: float = DEFAULTS["validation_fraction"]
    early_stopping_patience: int = DEFAULTS["early_stopping_patience"]  # 0: off
    early_stopping_fraction: float = DEFAULTS["early_stopping_fraction"]
    seed: int = 42
    log_every_steps: int = 50
    check_alignment_every: int = 10
    gradient_noise_stddev: float = 0.0
    share_metrics: bool = True
    max_categories: int = 64
    data_path: str | None = None
    intra_op_threads: int = 0  # 0: number of CPUs
    inter_op_threads: int = 1
    peer_timeout_s: float = 300.0
    connect_timeout_s: float = 600.0
    extra: dict[str, Any] = field(default_factory=dict)

    def shared(self) -> str:
        """Canonical JSON of what both sides must agree on (each side's own layers may differ)."""
        keys = (
            "batch_size",
            "epochs",
            "validation_fraction",
            "early_stopping_patience",
            "early_stopping_fraction",
            "seed",
            "check_alignment_every",
            "share_metrics",
        )
        d = asdict(self)
        return json.dumps({k: d[k] for k in keys}, sort_keys=True)


def _int(raw: dict[str, Any], key: str, default: int, lo: int, hi: int | None = None) -> int:
    v = raw.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"train.{key}: must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise ConfigError(f"train.{key}: must be between {lo} and {hi if hi is not None else 'inf'}, got {v}")
    return v


def _float(
    raw: dict[str, Any], key: str, default: float, lo: float, hi: float | None = None, *, open_lo: bool = False
) -> float:
    v = raw.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"train.{key}: must be a number, got {v!r}")
    v = float(v)
    if v < lo or (open_lo and v == lo) or (hi is not None and v > hi):
        raise ConfigError(f"train.{key}: out of range, got {v}")
    return v


def _layers(raw: dict[str, Any], key: str, default: tuple[int, ...], allow_empty: bool) -> tuple[int, ...]:
    v = raw.get(key)
    if v is None:
        return default
    if not isinstance(v, list | tuple) or not all(
        isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 65536 for x in v
    ):
        raise ConfigError(f"train.{key}: must be a list of positive integers (layer widths), got {v!r}")
    if not v and not allow_empty:
        raise ConfigError(f"train.{key}: needs at least one layer")
    return tuple(v)


def parse_train_params(raw: dict[str, Any] | None) -> TrainParams:
    raw = dict(raw or {})
    activation = raw.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"train.activation: must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    optimizer = raw.get("optimizer", "adam")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    share = raw.get("share_metrics", True)
    if not isinstance(share, bool):
        raise ConfigError(f"train.share_metrics: must be true or false, got {share!r}")
    data_path = raw.get("data_path")
    if data_path is not None and not isinstance(data_path, str):
        raise ConfigError("train.data_path: must be a string")
    params = TrainParams(
        bottom_layers=_layers(raw, "bottom_layers", DEFAULTS["bottom_layers"], False),
        top_layers=_layers(raw, "top_layers", DEFAULTS["top_layers"], True),
        activation=activation,
        optimizer=optimizer,
        learning_rate=_float(raw, "learning_rate", DEFAULTS["learning_rate"], 0.0, 10.0, open_lo=True),
        l2_regularization=_float(raw, "l2_regularization", DEFAULTS["l2_regularization"], 0.0, 1e6),
        batch_size=_int(raw, "batch_size", DEFAULTS["batch_size"], 1, 1 << 20),
        epochs=_int(raw, "epochs", DEFAULTS["epochs"], 1, 100000),
        validation_fraction=_float(raw, "validation_fraction", DEFAULTS["validation_fraction"], 0.0, 0.9),
        early_stopping_patience=_int(raw, "early_stopping_patience", DEFAULTS["early_stopping_patience"], 0),
        early_stopping_fraction=_float(raw, "early_stopping_fraction", DEFAULTS["early_stopping_fraction"], 0.0, 0.9),
        seed=_int(raw, "seed", 42, 0, 2**31 - 1),
        log_every_steps=_int(raw, "log_every_steps", 50, 1),
        check_alignment_every=_int(raw, "check_alignment_every", 10, 1),
        gradient_noise_stddev=_float(raw, "gradient_noise_stddev", 0.0, 0.0),
        share_metrics=share,
        max_categories=_int(raw, "max_categories", 64, 1, 100000),
        data_path=data_path,
        intra_op_threads=_int(raw, "intra_op_threads", 0, 0, 1024),
        inter_op_threads=_int(raw, "inter_op_threads", 1, 0, 1024),
        peer_timeout_s=_float(raw, "peer_timeout_s", 300.0, 0.0, open_lo=True),
        connect_timeout_s=_float(raw, "connect_timeout_s", 600.0, 0.0, open_lo=True),
    )
    if params.early_stopping_patience and params.validation_fraction + params.early_stopping_fraction >= 0.95:
        raise ConfigError(
            "train.early_stopping_fraction: together with validation_fraction it must leave at least 5 % of the rows "
            f"to train on, got {params.early_stopping_fraction} + {params.validation_fraction}"
        )
    return params
