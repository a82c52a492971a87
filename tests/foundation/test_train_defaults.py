"""The runtime applies the same training defaults as the API, so a config without a key trains like a ticket."""

from __future__ import annotations

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
