"""Ticket parameters: ONE declarative source for the validator, the OpenAPI schema and the docs' tables.

Each job kind uses some parameter *groups* (`psi`, `train`, `tree`, …); a group is a
mapping key → `Param` (type, default, bounds or choices, description). From it:

* `validate_params(kind, params)` merges the defaults and checks every key (each
  error names its field; an unknown key lists the allowed ones);
* `kind_params_schema(kind)` / `group_schema(name)` give the JSON Schema the API
  documents (apps/tickets/api/schema.py turns it into per-kind components);
* `markdown_table(name)` writes the parameter table of docs/training.md, docs/psi.md
  (tests/foundation/test_params_contract.py checks the docs hold the current table;
  `python -m apps.tickets.params --write-docs` rewrites them).

Adding a key is one line in its group; a new job kind registers its groups with
`register_kind(kind, "psi", "mygroup")` after `register_group("mygroup", {...})`.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apps.core.errors import ServiceError
from apps.tickets.choices import JobKind

ParamType = Literal["integer", "number", "boolean", "string", "layers"]


@dataclass(frozen=True)
class Param:
    """One ticket parameter: its JSON type, default, bounds (inclusive) or choices, and what it means."""

    type: ParamType
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    # layers: list length bounds; each element uses minimum/maximum
    min_items: int = 1
    max_items: int = 8

    # --- validation ---
    def clean(self, where: str, value: Any) -> Any:
        if self.choices is not None:
            if isinstance(value, bool) != isinstance(self.choices[0], bool) or value not in self.choices:
                raise ServiceError(f"must be one of {', '.join(map(str, self.choices))}", field=where)
            return value
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise ServiceError("must be true or false", field=where)
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ServiceError("must be a string", field=where)
            return value
        if self.type == "layers":
            if not isinstance(value, list) or not self.min_items <= len(value) <= self.max_items:
                raise ServiceError(f"must be a list of {self.min_items} to {self.max_items} layer sizes", field=where)
            return [self._number(f"{where}[{i}]", v, integer=True) for i, v in enumerate(value)]
        return self._number(where, value, integer=self.type == "integer")

    def _number(self, where: str, value: Any, *, integer: bool) -> Any:
        ok_type = int if integer else int | float
        lo, hi = self.minimum, self.maximum
        ok = not isinstance(value, bool) and isinstance(value, ok_type) and math.isfinite(value)
        if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            ok = False
        if not ok:
            what = "an integer" if integer else "a number"
            raise ServiceError(f"must be {what} from {_fmt(lo)} to {_fmt(hi)}", field=where)
        return int(value) if integer else float(value)

    # --- schema ---
    def schema(self) -> dict[str, Any]:
        s: dict[str, Any]
        if self.type == "layers":
            item: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                item["minimum"] = self.minimum
            if self.maximum is not None:
                item["maximum"] = self.maximum
            s = {"type": "array", "items": item, "minItems": self.min_items, "maxItems": self.max_items}
        else:
            s = {"type": self.type}
            if self.choices is not None:
                s["enum"] = list(self.choices)
            if self.minimum is not None:
                s["minimum"] = self.minimum
            if self.maximum is not None:
                s["maximum"] = self.maximum
        s["default"] = self.default
        s["description"] = self.description
        return s

    def doc_range(self) -> str:
        if self.choices is not None:
            return ", ".join(f"`{c}`" for c in self.choices)
        if self.type == "boolean":
            return "`true`, `false`"
        if self.type == "string":
            return "text"
        span = f"{_fmt(self.minimum)} to {_fmt(self.maximum)}"
        if self.type == "layers":
            return f"{self.min_items} to {self.max_items} widths, each {span}"
        return span


def _fmt(v: Any) -> str:
    if v is None:
        return "∞"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1e6 else str(v)
    return str(v)


def _json(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return str(v)


def Int(default: int, lo: int, hi: int, description: str) -> Param:  # noqa: N802 - reads as a type
    return Param("integer", default, description, minimum=lo, maximum=hi)


def Num(default: float, lo: float, hi: float, description: str) -> Param:  # noqa: N802
    return Param("number", default, description, minimum=lo, maximum=hi)


def Bool(default: bool, description: str) -> Param:  # noqa: N802
    return Param("boolean", default, description)


def Choice(default: Any, choices: tuple[Any, ...], description: str) -> Param:  # noqa: N802
    kind: ParamType = "integer" if isinstance(default, int) and not isinstance(default, bool) else "string"
    return Param(kind, default, description, choices=choices)


def Layers(default: list[int], description: str, *, min_items: int = 1, max_items: int = 8) -> Param:  # noqa: N802
    return Param("layers", default, description, minimum=1, maximum=4096, min_items=min_items, max_items=max_items)


# ---------------------------------------------------------------------------------------------
# The groups. Keys a group may take, their defaults and bounds: edit here (one line per key).
# The runtime (runtime/*/params.py) accepts every key here with at least these bounds
# (tests/foundation/test_params_contract.py checks it).
# ---------------------------------------------------------------------------------------------

PSI_PROTOCOLS = ("auto", "ecdh", "rsa", "rr22", "kkrt")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "leaky_relu")
OPTIMIZERS = ("adam", "sgd", "adagrad")
TREE_OBJECTIVES = ("binary:logistic", "reg:squarederror")
HE_SCHEMES = ("ou", "paillier")
KEY_BITS = (1024, 2048, 3072, 4096)

# Top-level keys of `params` (beside the groups).
TOP: dict[str, Param] = {
    "share_metrics": Bool(True, "the partner (follower) receives the training metrics (loss, AUC, KS, accuracy)"),
}

GROUPS: dict[str, dict[str, Param]] = {}
GROUP_TITLES: dict[str, str] = {}
KIND_GROUPS: dict[str, tuple[str, ...]] = {}


def register_group(name: str, params: dict[str, Param], title: str = "") -> dict[str, Param]:
    """Declare a parameter group (`params.<name>`)."""
    GROUPS[name] = params
    GROUP_TITLES[name] = title or name
    return params


def register_kind(kind: str, *groups: str) -> None:
    """Declare which groups a job kind takes (in running order)."""
    missing = [g for g in groups if g not in GROUPS]
    if missing:
        raise KeyError(f"unknown parameter groups for {kind}: {missing}")
    KIND_GROUPS[str(kind)] = tuple(groups)


register_group(
    "psi",
    {
        "protocol": Choice(
            "auto", PSI_PROTOCOLS, "PSI protocol; `auto` picks the best both sides can run (see docs/psi.md)"
        ),
        "batch_size": Int(8192, 1_000, 1_000_000, "ids per batch (the unit of streaming, work and checkpoints)"),
        "bucket_size": Int(
            1 << 20,
            1 << 10,
            1 << 24,
            "libpsi (RR22, KKRT): ids per bucket; the protocol runs bucket by bucket, so this bounds its memory "
            "(2^18 was 2-3 % faster for RR22 at 10M ids per side; see docs/psi.md)",
        ),
        "partitions": Int(
            1,
            1,
            256,
            "P > 1: split both sides' ids by a keyed hash into P partitions, one PSI pair each "
            "(`psi` jobs only; see docs/psi.md, Partitioned PSI)",
        ),
    },
    title="Private set intersection",
)

register_group(
    "train",
    {
        # Defaults chosen on small imbalanced tabular data (bench/train.py --small, docs/training.md "Defaults");
        # runtime/train/params.py has the same defaults (tests/foundation/test_train_defaults.py).
        "bottom_layers": Layers([32], "this side's bottom MLP widths (the last is the activation width sent/used)"),
        "top_layers": Layers([8], "the leader's top MLP hidden widths (a final 1-unit logit is added)"),
        "activation": Choice("relu", ACTIVATIONS, "activation of the hidden layers"),
        "optimizer": Choice("adam", OPTIMIZERS, "each side runs its own optimizer for its own weights"),
        "learning_rate": Num(0.003, 1e-6, 10.0, "optimizer step size"),
        "l2_regularization": Num(
            12.0, 0.0, 1e6, "adds `l2 × Σ w²` over the layer weights (not biases) to the summed loss; 0 = off"
        ),
        "batch_size": Int(64, 8, 65_536, "rows per step"),
        "epochs": Int(100, 1, 1000, "passes over the training rows (an upper bound when early stopping is on)"),
        "validation_fraction": Num(
            0.1, 0.0, 0.5, "rows held out for the reported validation metrics (seeded, identical on both sides)"
        ),
        "early_stopping_patience": Int(
            5, 0, 100, "epochs without a lower early-stopping loss before stopping; 0 = off (the last epoch is kept)"
        ),
        # At most 0.4: with validation_fraction at its 0.5 maximum, a tenth of the rows still trains.
        "early_stopping_fraction": Num(
            0.1, 0.0, 0.4, "rows (taken from the training part) on which early stopping watches the loss"
        ),
        "seed": Int(42, 0, 2**31 - 1, "initial weights, splits, per-epoch shuffle"),
        "gradient_noise_stddev": Num(0.0, 0.0, 10.0, "label protection: noise on the gradients sent back; 0 = off"),
        "share_metrics": Bool(True, "the follower receives loss/AUC/KS/accuracy (defaults to `params.share_metrics`)"),
        "max_categories": Int(64, 1, 100_000, "vocabulary size per categorical column"),
        "check_alignment_every": Int(10, 1, 1_000_000, "batch-id hash check period (batches)"),
        "log_every_steps": Int(50, 1, 1_000_000, "step-loss metric period (steps)"),
        "intra_op_threads": Int(0, 0, 1024, "TensorFlow intra-op threads; 0 = number of CPUs"),
        "inter_op_threads": Int(1, 0, 1024, "TensorFlow inter-op threads"),
        "peer_timeout_s": Num(300.0, 1.0, 86_400.0, "seconds of silence from the partner before failing"),
        "connect_timeout_s": Num(600.0, 1.0, 86_400.0, "seconds to reach the partner before failing"),
    },
    title="Vertical neural network",
)

register_group(
    "tree",
    {
        "num_trees": Int(100, 1, 10_000, "boosting rounds (trees)"),
        "max_depth": Int(5, 1, 10, "depth of each tree"),
        "learning_rate": Num(0.1, 1e-6, 10.0, "shrinkage of each tree's output"),
        "max_bin": Int(32, 2, 127, "histogram bins per feature"),
        "min_child_weight": Num(1.0, 0.0, 1e9, "minimum hessian sum in a child"),
        "reg_lambda": Num(1.0, 0.0, 1e9, "L2 regularisation of leaf weights"),
        "gamma": Num(0.0, 0.0, 1e9, "minimum gain of a split"),
        "subsample": Num(1.0, 0.01, 1.0, "fraction of rows per tree"),
        "colsample_bytree": Num(1.0, 0.01, 1.0, "fraction of features per tree"),
        "validation_fraction": Num(0.2, 0.0, 0.5, "rows held out for the validation metrics"),
        "early_stopping_rounds": Int(10, 0, 10_000, "trees without a lower validation loss before stopping; 0 = off"),
        "seed": Int(42, 0, 2**31 - 1, "splits and sampling"),
        "objective": Choice("binary:logistic", TREE_OBJECTIVES, "loss"),
        "he_scheme": Choice("ou", HE_SCHEMES, "additively homomorphic scheme for the gradients"),
        "key_bits": Choice(2048, KEY_BITS, "homomorphic key size"),
    },
    title="Vertical boosted trees (SecureBoost)",
)

register_group(
    "stream",
    {
        "max_delay_s": Num(
            600.0, 0.0, 7 * 86_400.0, "two halves of one example match when their event times are at most this apart"
        ),
        "block_size": Int(
            4096, 16, 1_000_000, "events each side reads per join round at most: a data block holds at most this many"
        ),
        "idle_timeout_s": Num(
            300.0,
            1.0,
            7 * 86_400.0,
            "a side whose source delivers nothing this long stops holding the join back: its watermark follows "
            "the partner's, and its events older than that arriving later count as late",
        ),
        "publish_every_blocks": Int(
            10, 1, 1_000_000, "stream_join_train: a new model version after this many new blocks"
        ),
        "publish_every_minutes": Num(
            0.0, 0.0, 7 * 1440.0, "stream_join_train: also a new version after this long with new blocks; 0 = off"
        ),
    },
    title="Real-time join (stream)",
)

register_group(
    "serve",
    {
        "model_version": Param(
            "string", "", "the production model version both sides serve (its id, the same on both installations)"
        ),
        "deadline_ms": Num(
            200.0, 1.0, 60_000.0, "how long a predict call waits for the partner's half before failing with 503"
        ),
        "max_ids": Int(1000, 1, 100_000, "ids per predict call"),
    },
    title="Online serving",
)

register_group(
    "score",
    {
        "model_version": Param(
            "string",
            "",
            "the model version both sides score with (its id, the same on both installations; not archived)",
        ),
        "batch_size": Int(4096, 1, 1_000_000, "rows per scoring batch"),
    },
    title="Batch scoring",
)

register_kind(JobKind.PSI, "psi")
register_kind(JobKind.PSI_VERTICAL_NN, "psi", "train")
register_kind(JobKind.VERTICAL_NN, "train")
register_kind(JobKind.PSI_VERTICAL_TREE, "psi", "tree")
register_kind(JobKind.VERTICAL_TREE, "tree")
register_kind(JobKind.STREAM_JOIN, "stream")
register_kind(JobKind.STREAM_JOIN_TRAIN, "stream", "train")
register_kind(JobKind.SERVE, "serve")
register_kind(JobKind.SCORE, "score")
register_kind(JobKind.PSI_SCORE, "psi", "score")


def defaults(group: str) -> dict[str, Any]:
    return {k: (list(p.default) if isinstance(p.default, list) else p.default) for k, p in GROUPS[group].items()}


# Kept for the dashboard form and older imports.
PSI_DEFAULTS = defaults("psi")
TRAIN_DEFAULTS = defaults("train")
TREE_DEFAULTS = defaults("tree")
STREAM_DEFAULTS = defaults("stream")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _unknown(where: str, given: set[str], allowed: list[str]) -> None:
    extra = sorted(given - set(allowed))
    if extra:
        raise ServiceError(f"unknown keys: {', '.join(extra)}; allowed: {', '.join(allowed)}", field=where)


def validate_group(group: str, value: Any, *, where: str | None = None) -> dict[str, Any]:
    """One group's values, defaults merged, every key checked."""
    where = where or f"params.{group}"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ServiceError("must be an object", field=where)
    spec = GROUPS[group]
    _unknown(where, set(value), list(spec))
    return {k: p.clean(f"{where}.{k}", value[k]) if k in value else defaults(group)[k] for k, p in spec.items()}


def validate_params(kind: str, params: Any) -> dict[str, Any]:
    """Merge defaults into `params` for a ticket of `kind` and validate every field."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ServiceError("must be an object", field="params")
    groups = KIND_GROUPS.get(str(kind))
    if groups is None:
        raise ServiceError(f"unknown job kind {kind!r}", field="kind")
    _unknown("params", set(params), [*TOP, *groups])
    out: dict[str, Any] = {k: p.clean(f"params.{k}", params[k]) if k in params else p.default for k, p in TOP.items()}
    for g in groups:
        out[g] = validate_group(g, params.get(g))
    if "psi" in out and out["psi"]["partitions"] > 1 and str(kind) != JobKind.PSI:
        # Training reads one aligned table in one process; partitions would need a merge step before it.
        raise ServiceError(f"more than 1 partition runs only for `{JobKind.PSI}` jobs", field="params.psi.partitions")
    if "train" in out:
        # One switch, two places a client may set it: the group's wins, else the top-level one.
        inner = (params.get("train") or {}).get("share_metrics")
        if inner is None:
            out["train"]["share_metrics"] = out["share_metrics"]
        elif "share_metrics" in params and params["share_metrics"] != inner:
            raise ServiceError("differs from params.share_metrics", field="params.train.share_metrics")
        else:
            out["share_metrics"] = inner
    return out


def validate_tree_params(tree_in: Any) -> dict[str, Any]:
    """The `tree` group of a SecureBoost ticket, defaults merged (runtime/tree/params.py reads the same names)."""
    return validate_group("tree", tree_in)


# ---------------------------------------------------------------------------------------------
# Schema and docs
# ---------------------------------------------------------------------------------------------


def group_schema(group: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": GROUP_TITLES[group],
        "properties": {k: p.schema() for k, p in GROUPS[group].items()},
        "additionalProperties": False,
    }


def kind_params_schema(kind: str, group_ref: Any = None) -> dict[str, Any]:
    """`params` of a ticket of `kind`; `group_ref(name)` may return a $ref to a group's component."""
    ref = group_ref or group_schema
    return {
        "type": "object",
        "description": f"parameters of a `{kind}` ticket; every key is optional (the default applies)",
        "properties": {**{k: p.schema() for k, p in TOP.items()}, **{g: ref(g) for g in KIND_GROUPS[str(kind)]}},
        "additionalProperties": False,
    }


def markdown_table(group: str) -> str:
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for k, p in GROUPS[group].items():
        typ = "list of integers" if p.type == "layers" else p.type
        rows.append(f"| `{k}` | {typ} | `{_json(p.default)}` | {p.doc_range()} | {p.description} |")
    return "\n".join(rows) + "\n"


DOC_TABLES = {
    "docs/training.md": "train",
    "docs/psi.md": "psi",
    "docs/trees.md": "tree",
    "docs/streaming.md": "stream",
    "docs/serving.md": "serve",
    "docs/scoring.md": "score",
}
_MARK = re.compile(r"(<!-- params:(\w+) -->\n)(.*?)(<!-- /params:\2 -->)", re.S)


def render_docs(text: str) -> str:
    """`text` with every `<!-- params:GROUP -->…<!-- /params:GROUP -->` block regenerated."""
    return _MARK.sub(lambda m: m.group(1) + markdown_table(m.group(2)) + m.group(4), text)


def write_docs(root: Path) -> list[str]:
    changed = []
    for rel in DOC_TABLES:
        path = root / rel
        text = path.read_text()
        new = render_docs(text)
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


if __name__ == "__main__":  # python -m apps.tickets.params --write-docs
    if sys.argv[1:] != ["--write-docs"]:
        sys.exit("usage: python -m apps.tickets.params --write-docs")
    for rel in write_docs(Path(__file__).resolve().parents[2]):
        print("rewrote", rel)
