"""Ticket parameters: defaults and validation (each field error names the field)."""

from __future__ import annotations

from typing import Any

from apps.core.errors import ServiceError
from apps.tickets.choices import PSI_KINDS, TREE_KINDS, JobKind

PSI_PROTOCOLS = ("auto", "ecdh", "rsa", "rr22", "kkrt")
PSI_DEFAULTS: dict[str, Any] = {"protocol": "auto"}
# Chosen on small imbalanced tabular data (bench/train.py --small, docs/training.md "Defaults");
# runtime/train/params.py has the same defaults (tests/foundation/test_train_defaults.py).
TRAIN_DEFAULTS: dict[str, Any] = {
    "bottom_layers": [32],
    "top_layers": [8],
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 0.003,
    "l2_regularization": 12.0,
    "batch_size": 64,
    "epochs": 100,
    "validation_fraction": 0.1,
    "early_stopping_patience": 5,
    "early_stopping_fraction": 0.1,
    "seed": 42,
    "gradient_noise_stddev": 0.0,
}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu")
TREE_DEFAULTS: dict[str, Any] = {
    "num_trees": 100,
    "max_depth": 5,
    "learning_rate": 0.1,
    "max_bin": 32,
    "min_child_weight": 1.0,
    "reg_lambda": 1.0,
    "gamma": 0.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "validation_fraction": 0.2,
    "early_stopping_rounds": 10,
    "seed": 42,
    "objective": "binary:logistic",
    "he_scheme": "ou",
    "key_bits": 2048,
}
TREE_OBJECTIVES = ("binary:logistic", "reg:squarederror")
HE_SCHEMES = ("ou", "paillier")
KEY_BITS = (1024, 2048, 3072, 4096)
OPTIMIZERS = ("adam", "sgd", "adagrad")


def _int(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ServiceError(f"must be an integer from {lo} to {hi}", field=where)
    return value


def _float(where: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise ServiceError(f"must be a number from {lo} to {hi}", field=where)
    return float(value)


def _layers(where: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= 8:
        raise ServiceError("must be a list of 1 to 8 layer sizes", field=where)
    return [_int(f"{where}[{i}]", v, 1, 4096) for i, v in enumerate(value)]


def validate_params(kind: str, params: Any) -> dict[str, Any]:
    """Merge defaults into `params` and validate every field."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ServiceError("must be an object", field="params")
    unknown = set(params) - {"psi", "train", "tree", "share_metrics"}
    if unknown:
        raise ServiceError(f"unknown keys: {', '.join(sorted(unknown))}", field="params")
    out: dict[str, Any] = {"share_metrics": bool(params.get("share_metrics", True))}
    psi_in = params.get("psi") or {}
    if not isinstance(psi_in, dict):
        raise ServiceError("must be an object", field="params.psi")
    psi = {**PSI_DEFAULTS, **psi_in}
    if psi["protocol"] not in PSI_PROTOCOLS:
        raise ServiceError(f"must be one of {', '.join(PSI_PROTOCOLS)}", field="params.psi.protocol")
    extra = set(psi) - {"protocol", "batch_size"}
    if extra:
        raise ServiceError(f"unknown keys: {', '.join(sorted(extra))}", field="params.psi")
    if "batch_size" in psi:
        _int("params.psi.batch_size", psi["batch_size"], 1_000, 10_000_000)
    if kind in PSI_KINDS:
        out["psi"] = psi
    if kind in TREE_KINDS:
        out["tree"] = validate_tree_params(params.get("tree"))
    if kind in (JobKind.PSI_VERTICAL_NN, JobKind.VERTICAL_NN):
        train_in = params.get("train") or {}
        if not isinstance(train_in, dict):
            raise ServiceError("must be an object", field="params.train")
        extra = set(train_in) - set(TRAIN_DEFAULTS)
        if extra:
            raise ServiceError(f"unknown keys: {', '.join(sorted(extra))}", field="params.train")
        t = {**TRAIN_DEFAULTS, **train_in}
        t["bottom_layers"] = _layers("params.train.bottom_layers", t["bottom_layers"])
        t["top_layers"] = _layers("params.train.top_layers", t["top_layers"])
        if t["activation"] not in ACTIVATIONS:
            raise ServiceError(f"must be one of {', '.join(ACTIVATIONS)}", field="params.train.activation")
        if t["optimizer"] not in OPTIMIZERS:
            raise ServiceError(f"must be one of {', '.join(OPTIMIZERS)}", field="params.train.optimizer")
        t["learning_rate"] = _float("params.train.learning_rate", t["learning_rate"], 1e-6, 10.0)
        t["l2_regularization"] = _float("params.train.l2_regularization", t["l2_regularization"], 0.0, 1e6)
        _int("params.train.batch_size", t["batch_size"], 8, 65_536)
        _int("params.train.epochs", t["epochs"], 1, 1000)
        t["validation_fraction"] = _float("params.train.validation_fraction", t["validation_fraction"], 0.0, 0.5)
        _int("params.train.early_stopping_patience", t["early_stopping_patience"], 0, 100)
        t["early_stopping_fraction"] = _float(
            "params.train.early_stopping_fraction", t["early_stopping_fraction"], 0.0, 0.5
        )
        _int("params.train.seed", t["seed"], 0, 2**31 - 1)
        t["gradient_noise_stddev"] = _float("params.train.gradient_noise_stddev", t["gradient_noise_stddev"], 0.0, 10.0)
        out["train"] = t
    return out


def validate_tree_params(tree_in: Any) -> dict[str, Any]:
    """The `tree` group of a SecureBoost ticket, defaults merged (runtime/tree/params.py reads the same names)."""
    tree_in = tree_in or {}
    if not isinstance(tree_in, dict):
        raise ServiceError("must be an object", field="params.tree")
    extra = set(tree_in) - set(TREE_DEFAULTS)
    if extra:
        raise ServiceError(f"unknown keys: {', '.join(sorted(extra))}", field="params.tree")
    t = {**TREE_DEFAULTS, **tree_in}
    w = "params.tree."
    _int(w + "num_trees", t["num_trees"], 1, 10_000)
    _int(w + "max_depth", t["max_depth"], 1, 10)
    t["learning_rate"] = _float(w + "learning_rate", t["learning_rate"], 1e-6, 10.0)
    _int(w + "max_bin", t["max_bin"], 2, 127)
    t["min_child_weight"] = _float(w + "min_child_weight", t["min_child_weight"], 0.0, 1e9)
    t["reg_lambda"] = _float(w + "reg_lambda", t["reg_lambda"], 0.0, 1e9)
    t["gamma"] = _float(w + "gamma", t["gamma"], 0.0, 1e9)
    t["subsample"] = _float(w + "subsample", t["subsample"], 0.01, 1.0)
    t["colsample_bytree"] = _float(w + "colsample_bytree", t["colsample_bytree"], 0.01, 1.0)
    t["validation_fraction"] = _float(w + "validation_fraction", t["validation_fraction"], 0.0, 0.5)
    _int(w + "early_stopping_rounds", t["early_stopping_rounds"], 0, 10_000)
    _int(w + "seed", t["seed"], 0, 2**31 - 1)
    if t["objective"] not in TREE_OBJECTIVES:
        raise ServiceError(f"must be one of {', '.join(TREE_OBJECTIVES)}", field=w + "objective")
    if t["he_scheme"] not in HE_SCHEMES:
        raise ServiceError(f"must be one of {', '.join(HE_SCHEMES)}", field=w + "he_scheme")
    if t["key_bits"] not in KEY_BITS or isinstance(t["key_bits"], bool):
        raise ServiceError(f"must be one of {', '.join(map(str, KEY_BITS))}", field=w + "key_bits")
    return t
