"""Every registered learner's ``search_space(trial)`` (docs/concepts/protocol.md#rule-4,
docs/reference/setups.md#search-spaces).

Each space must cover at least three decades of lr and of weight decay, on a log scale, and
return only keys the study runner can route: TrainConfig fields to the trainer, the rest as
options the learner accepts.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from localearn.registry import get_algorithm, list_algorithms
from localearn.run import check_options
from localearn.trainer import TrainConfig


class RecordingTrial:
    """Answers like an Optuna trial (the range's low end) and records every range asked."""

    def __init__(self) -> None:
        self.floats: dict[str, tuple[float, float, bool]] = {}
        self.other: dict[str, Any] = {}

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        self.floats[name] = (low, high, log)
        return low

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.other[name] = (low, high)
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.other[name] = list(choices)
        return choices[0]


def _names() -> list[str]:
    return list_algorithms()


@pytest.mark.parametrize("algo", _names())
def test_space_covers_three_decades_of_lr_and_weight_decay(algo: str) -> None:
    trial = RecordingTrial()
    params = get_algorithm(algo).search_space(trial)
    for key in ("lr", "weight_decay"):
        assert key in params, f"{algo}: search space has no {key}"
        low, high, log = trial.floats[key]
        assert log, f"{algo}: {key} must be searched on a log scale"
        assert low > 0 and math.log10(high / low) >= 3 - 1e-9, f"{algo}: {key} [{low}, {high}] < 3 decades"


@pytest.mark.parametrize("algo", _names())
def test_space_keys_are_train_config_fields_or_learner_options(algo: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):  # real Optuna trials: valid distributions, values the learner accepts
        params = get_algorithm(algo).search_space(study.ask())
        fields = set(TrainConfig.__dataclass_fields__)
        check_options(algo, {k: v for k, v in params.items() if k not in fields})
        TrainConfig(**{k: v for k, v in params.items() if k in fields}).validate()


def test_recording_trial_sees_an_override() -> None:
    """The check is not vacuous: FF's space differs from the default one."""
    trial = RecordingTrial()
    get_algorithm("forward_forward").search_space(trial)
    assert trial.floats["weight_decay"] == (1e-5, 1e-2, True)
