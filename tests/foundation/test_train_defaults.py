"""The runtime applies the same training defaults as the API, so a config without a key trains like a ticket."""

from __future__ import annotations

import pytest

from apps.core.errors import ServiceError
from apps.tickets.params import TRAIN_DEFAULTS, validate_params
from runtime.train.params import TrainParams, parse_train_params


def test_the_runtime_defaults_are_the_ticket_defaults() -> None:
    runtime = parse_train_params({})
    for key, value in TRAIN_DEFAULTS.items():
        got = getattr(runtime, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_a_ticket_with_no_training_params_stores_every_default() -> None:
    stored = validate_params("vertical_nn", {})["train"]
    assert stored == TRAIN_DEFAULTS
    # the runtime trains a ticket's stored params exactly as it trains an empty `train` block
    assert parse_train_params(stored) == parse_train_params({}) == TrainParams()


def test_the_largest_held_out_fractions_the_api_accepts_still_leave_rows_to_train() -> None:
    stored = validate_params("vertical_nn", {"train": {"validation_fraction": 0.5, "early_stopping_fraction": 0.4}})
    assert parse_train_params(stored["train"]).early_stopping_fraction == 0.4
    with pytest.raises(ServiceError) as e:
        validate_params("vertical_nn", {"train": {"early_stopping_fraction": 0.5}})
    assert e.value.field == "params.train.early_stopping_fraction"
