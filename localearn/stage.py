"""Training units and the small types of the learner contract (:mod:`localearn.learner`).

A :class:`Stage` is what the protocol calls a training unit (docs/concepts/protocol.md, Rule 1):
layers trained together to one stopping point. Kept apart from the learner so that the modules the
learner uses (the prefix cache among them) can name it without importing the learner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
PREDICTION_RULES = ("sum", "mean_prob")
Losses = dict[str, Tensor]


@dataclass(frozen=True)
class Stage:
    """A training unit (docs/concepts/protocol.md, Rule 1): layers trained to one stopping point.

    Attributes:
        name: shown in reports (``network``, ``layer0``, ``predictor2``, ...).
        layers: indices into ``learner.layers`` that this unit trains.
        max_epochs: the unit's own epoch budget, below the trainer's cap (e.g. a closed-form
            predictor solved in one pass); None: the trainer's cap.
    """

    name: str
    layers: tuple[int, ...]
    max_epochs: int | None = None


__all__ = ["PREDICTION_RULES", "Losses", "OptimizerFactory", "Stage"]
