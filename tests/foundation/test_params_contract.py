"""One source for ticket parameters: the validator, the runtime, the docs' tables and the API schema agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.core.errors import ServiceError
from apps.tickets.choices import JobKind
from apps.tickets.params import (
    DOC_TABLES,
    GROUPS,
    KIND_GROUPS,
    markdown_table,
    render_docs,
    validate_params,
)
from runtime.errors import ConfigError
from runtime.psi.partition import parse_psi as parse_psi_params
from runtime.train.params import parse_train_params
from runtime.tree.params import parse_tree_params

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"psi": parse_psi_params, "train": parse_train_params, "tree": parse_tree_params}


def test_every_job_kind_has_its_parameter_groups() -> None:
    assert set(KIND_GROUPS) == {k.value for k in JobKind}


@pytest.mark.parametrize("rel", sorted(DOC_TABLES))
def test_the_docs_hold_the_current_parameter_table(rel: str) -> None:
    text = (ROOT / rel).read_text()
    assert f"<!-- params:{DOC_TABLES[rel]} -->" in text
    assert markdown_table(DOC_TABLES[rel]) in text
    assert render_docs(text) == text, f"{rel} is stale: run python -m apps.tickets.params --write-docs"


def test_the_documented_keys_and_selu_are_accepted() -> None:
    train = {"max_categories": 32, "check_alignment_every": 5, "intra_op_threads": 2, "share_metrics": False}
    out = validate_params("vertical_nn", {"train": {**train, "activation": "selu"}})
    assert {k: out["train"][k] for k in train} == train
    assert out["train"]["activation"] == "selu"
    assert out["share_metrics"] is False  # one switch: the group's value is the ticket's


def test_an_unknown_key_lists_the_allowed_keys() -> None:
    with pytest.raises(ServiceError) as e:
        validate_params("vertical_nn", {"train": {"epoch": 3}})
    assert e.value.field == "params.train"
    assert "unknown keys: epoch" in e.value.message
    for key in GROUPS["train"]:
        assert key in e.value.message
    with pytest.raises(ServiceError) as e:
        validate_params("psi", {"tree": {}})
    assert e.value.field == "params" and "allowed: share_metrics, psi" in e.value.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"train": {"epochs": 0}}, "params.train.epochs"),
        ({"train": {"epochs": True}}, "params.train.epochs"),
        ({"train": {"learning_rate": float("nan")}}, "params.train.learning_rate"),
        ({"train": {"bottom_layers": [64, 0]}}, "params.train.bottom_layers[1]"),
        ({"train": {"activation": "softmax"}}, "params.train.activation"),
        ({"train": {"share_metrics": "yes"}}, "params.train.share_metrics"),
        ({"share_metrics": True, "train": {"share_metrics": False}}, "params.train.share_metrics"),
        ({"train": []}, "params.train"),
    ],
)
def test_bad_values_name_their_field(params: dict, field: str) -> None:
    with pytest.raises(ServiceError) as e:
        validate_params("psi_vertical_nn", params)
    assert e.value.field == field


@pytest.mark.parametrize("group", sorted(RUNTIME))
def test_the_runtime_accepts_every_ticket_key_at_its_bounds(group: str) -> None:
    """Whatever the API accepts, the runtime runs: every key, every choice, both ends of every range."""
    parse = RUNTIME[group]
    parse({k: p.default for k, p in GROUPS[group].items()})
    for key, p in GROUPS[group].items():
        values = list(p.choices or ())
        if p.type in ("integer", "number") and p.choices is None:
            values += [p.minimum, p.maximum]
        if p.type == "layers":
            values += [[int(p.minimum)] * p.min_items, [int(p.maximum)] * p.max_items]
        for v in values:
            try:
                parse({key: v})
            except ConfigError as e:  # pragma: no cover - the failure message is the point
                pytest.fail(f"the ticket accepts {group}.{key}={v!r} but the runtime refuses it: {e}")
