"""Ticket parameters: defaults and validation (each field error names the field)."""

from __future__ import annotations

from typing import Any

from apps.core.errors import ServiceError
from apps.tickets.choices import JobKind

PSI_PROTOCOLS = ("auto", "ecdh", "rsa", "rr22", "kkrt")
PSI_DEFAULTS: dict[str, Any] = {"protocol": "auto"}
TRAIN_DEFAULTS: dict[str, Any] = {
    "bottom_layers": [64, 32],
    "top_layers": [16],
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 0.001,
    "batch_size": 256,
    "epochs": 5,
    "validation_fraction": 0.2,
    "early_stopping_patience": 2,
    "seed": 42,
    "gradient_noise_stddev": 0.0,
}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu")
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
    unknown = set(params) - {"psi", "train", "share_metrics"}
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
    if kind in (JobKind.PSI, JobKind.PSI_VERTICAL_NN):
        out["psi"] = psi
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
        _int("params.train.batch_size", t["batch_size"], 8, 65_536)
        _int("params.train.epochs", t["epochs"], 1, 1000)
        t["validation_fraction"] = _float("params.train.validation_fraction", t["validation_fraction"], 0.0, 0.5)
        _int("params.train.early_stopping_patience", t["early_stopping_patience"], 0, 100)
        _int("params.train.seed", t["seed"], 0, 2**31 - 1)
        t["gradient_noise_stddev"] = _float("params.train.gradient_noise_stddev", t["gradient_noise_stddev"], 0.0, 10.0)
        out["train"] = t
    return out
