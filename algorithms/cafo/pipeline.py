"""CaFo-Rand across pipeline ranks: block k and its predictor k live together.

Zhao et al., *The Cascaded Forward Algorithm for Neural Network Training*, arXiv 2303.09728.
A predictor reads only its own block's output, and CaFo-Rand's blocks are never trained, so the
chain can be cut between any two blocks (:mod:`localearn.distributed.pipelined`): chain position
k holds block k and predictor k. In unit ``predictor<k>`` the ranks before block k stream frozen
block outputs forward and the rank holding block k trains predictor k on them, exactly as one
process does (the same features, the same steps). Deviation: a pipeline rank recomputes its
blocks on every batch instead of reading CaFo's feature cache (the cache keys on the whole
prefix, which no rank holds).

Evaluation sums the predictors' normalised scores (``prob``) or raw scores (``logits``) as they
travel; the last rank takes ``log(mean)``, which is :meth:`CaFo.predict`'s rule. CaFo-DFA refuses:
its blocks learn from the error at the output of the whole stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from localearn.distributed.pipelined import Pipelined
from localearn.layer import Context
from localearn.learner import Stage

from .layers import CafoPredictor
from .sparsemax import sparsemax


class CafoPipelined(Pipelined):
    """The pipeline part of :class:`~localearn.algorithms.cafo.CaFo` (see the module docstring)."""

    num_blocks: int
    aggregate: str
    predictor_loss: str

    def normalise(self) -> Callable[[Tensor], Tensor]:
        """Scores to the probabilities that ``prob`` aggregation averages."""
        return sparsemax if self.predictor_loss == "sparsemax" else (lambda s: torch.softmax(s, -1))

    def pipeline_positions(self) -> list[tuple[int, ...]]:
        """Position k: block k and predictor k."""
        return [(k, self.num_blocks + k) for k in range(self.num_blocks)]

    def pipeline_step(self, h: Any, ctx: Context, stage: Stage,
                      positions: Sequence[tuple[int, ...]]) -> tuple[Any, dict[str, float]]:
        """Frozen blocks forward; the unit's predictor fits its block's output."""
        losses: dict[str, float] = {}
        for block, pred in positions:
            with torch.no_grad():
                h = self.layers[block](h)
            if pred in stage.layers:
                predictor = self.layers[pred]
                assert isinstance(predictor, CafoPredictor)
                losses[f"loss/{predictor.layer_name}"] = predictor.fit_batch(h, ctx)
        return h, losses

    def pipeline_eval(self, p: int, h: Any, ctx: Context, stage: Stage | None,
                      vote: bool) -> tuple[Any, Tensor | None]:
        """Block p's output and, if it votes, predictor p's scores (normalised for ``prob``)."""
        h = self.layers[p](h)
        if not vote:
            return h, None
        predictor = self.layers[self.num_blocks + p]
        assert isinstance(predictor, CafoPredictor)
        predictor.finalize()  # a closed-form predictor's pending sums become its weights
        s = predictor(h)
        return h, s if stage is not None or self.aggregate == "logits" else self.normalise()(s)

    def pipeline_votes(self, stage: Stage | None) -> tuple[int, ...]:
        """Every block for the prediction; block k for unit ``predictor<k>``."""
        if stage is None:
            return tuple(range(self.num_blocks))
        return tuple(i - self.num_blocks for i in stage.layers)

    def pipeline_scores(self, total: Tensor, stage: Stage | None) -> Tensor:
        """``log(mean_k q_k)`` for the ``prob`` prediction; the sum otherwise."""
        if stage is not None or self.aggregate == "logits":
            return total
        return torch.log((total / self.num_blocks).clamp_min(1e-12))
