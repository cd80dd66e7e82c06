"""Search spaces as data: one shared learning-rate and weight-decay space, which a learner extends.

docs/concepts/protocol.md (Rule 4): every arm of a study is tuned over its own space with the same
budget. The space is a mapping from a name to a distribution; names that are
:class:`~localearn.config.TrainConfig` fields (``lr``, ``weight_decay``, ``batch_size``, ...) go to
the trainer, the rest are learner options. :data:`SEARCH_SPACE` is the shared part (three decades
of lr and of weight decay); a learner's ``search`` class attribute adds its own knobs or replaces a
shared range, and never restates the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dist:
    """A distribution Optuna can sample: ``float`` (log-uniform when ``log``), ``int`` or ``choice``."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = True
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


def log_uniform(low: float, high: float) -> Dist:
    """``low`` to ``high``, log-uniform."""
    return Dist("float", low, high, True)


def integer(low: int, high: int, log: bool = False) -> Dist:
    """An integer from ``low`` to ``high`` inclusive."""
    return Dist("int", low, high, log)


def choice(*options: Any) -> Dist:
    """One of ``options``."""
    return Dist("choice", choices=tuple(options))


SEARCH_SPACE: dict[str, Dist] = {"lr": log_uniform(1e-5, 1e-2), "weight_decay": log_uniform(1e-6, 1e-3)}


def suggest(trial: Any, space: Mapping[str, Dist]) -> dict[str, Any]:
    """One value per name of ``space`` from ``trial``."""
    return {name: dist.suggest(trial, name) for name, dist in space.items()}
