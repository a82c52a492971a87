"""The ``tree`` block of a job config, validated, with defaults (the same as the ticket's)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from runtime.errors import ConfigError

OBJECTIVES = ("binary:logistic", "reg:squarederror")
SCHEMES = ("ou", "paillier")
# Fault injection for the runtime tests only (never set by the control plane).
FAULTS = ("", "wrong_key", "tamper_count")


@dataclass(frozen=True)
class TreeParams:
    num_trees: int = 100
    max_depth: int = 5
    learning_rate: float = 0.1
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    validation_fraction: float = 0.2
    early_stopping_rounds: int = 10  # 0: off
    seed: int = 42
    objective: str = "binary:logistic"
    he_scheme: str = "ou"
    key_bits: int = 2048
    share_metrics: bool = True
    data_path: str | None = None
    threads: int = 0  # 0: number of CPUs
    pack_slots: int = 0  # histogram sums per ciphertext: 0 = the cheapest the key allows, 1 = no packing
    peer_timeout_s: float = 600.0
    connect_timeout_s: float = 600.0
    fault: str = ""

    def shared(self) -> str:
        """Canonical JSON of what both sides must agree on."""
        keys = (
            "num_trees",
            "max_depth",
            "max_bin",
            "subsample",
            "colsample_bytree",
            "validation_fraction",
            "early_stopping_rounds",
            "seed",
            "objective",
            "he_scheme",
            "key_bits",
            "share_metrics",
        )
        d = asdict(self)
        return json.dumps({k: d[k] for k in keys}, sort_keys=True)


def _num(raw: dict[str, Any], key: str, default: Any, lo: float, hi: float, *, integer: bool) -> Any:
    v = raw.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int if integer else int | float):
        raise ConfigError(f"tree.{key}: must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not lo <= v <= hi:
        raise ConfigError(f"tree.{key}: must be from {lo} to {hi}, got {v}")
    return int(v) if integer else float(v)


def _choice(raw: dict[str, Any], key: str, default: str, options: tuple[str, ...]) -> str:
    v = raw.get(key, default)
    if v not in options:
        raise ConfigError(f"tree.{key}: must be one of {', '.join(o for o in options if o)}, got {v!r}")
    return str(v)


def parse_tree_params(raw: dict[str, Any] | None) -> TreeParams:
    raw = dict(raw or {})
    share = raw.get("share_metrics", True)
    if not isinstance(share, bool):
        raise ConfigError(f"tree.share_metrics: must be true or false, got {share!r}")
    data_path = raw.get("data_path")
    if data_path is not None and not isinstance(data_path, str):
        raise ConfigError("tree.data_path: must be a string")
    subsample = _num(raw, "subsample", 1.0, 0.0, 1.0, integer=False)
    colsample = _num(raw, "colsample_bytree", 1.0, 0.0, 1.0, integer=False)
    if subsample <= 0 or colsample <= 0:
        raise ConfigError("tree.subsample and tree.colsample_bytree: must be above 0")
    return TreeParams(
        num_trees=_num(raw, "num_trees", 100, 1, 10_000, integer=True),
        max_depth=_num(raw, "max_depth", 5, 1, 10, integer=True),
        learning_rate=_num(raw, "learning_rate", 0.1, 1e-6, 10.0, integer=False),
        max_bin=_num(raw, "max_bin", 32, 2, 127, integer=True),
        min_child_weight=_num(raw, "min_child_weight", 1.0, 0.0, 1e9, integer=False),
        reg_lambda=_num(raw, "reg_lambda", 1.0, 0.0, 1e9, integer=False),
        gamma=_num(raw, "gamma", 0.0, 0.0, 1e9, integer=False),
        subsample=subsample,
        colsample_bytree=colsample,
        validation_fraction=_num(raw, "validation_fraction", 0.2, 0.0, 0.5, integer=False),
        early_stopping_rounds=_num(raw, "early_stopping_rounds", 10, 0, 10_000, integer=True),
        seed=_num(raw, "seed", 42, 0, 2**31 - 1, integer=True),
        objective=_choice(raw, "objective", "binary:logistic", OBJECTIVES),
        he_scheme=_choice(raw, "he_scheme", "ou", SCHEMES),
        key_bits=_num(raw, "key_bits", 2048, 1024, 4096, integer=True),
        share_metrics=share,
        data_path=data_path,
        threads=_num(raw, "threads", 0, 0, 1024, integer=True),
        pack_slots=_num(raw, "pack_slots", 0, 0, 64, integer=True),
        peer_timeout_s=_num(raw, "peer_timeout_s", 600.0, 0.001, 1e7, integer=False),
        connect_timeout_s=_num(raw, "connect_timeout_s", 600.0, 0.001, 1e7, integer=False),
        fault=_choice(raw, "fault", "", FAULTS),
    )
