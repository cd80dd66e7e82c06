"""CaFo's chain: position k is block k with its predictor k, in one process or across ranks.

Zhao et al., *The Cascaded Forward Algorithm for Neural Network Training*, arXiv 2303.09728. A
predictor reads only its own block's output, and CaFo-Rand's blocks are never trained, so the
chain can be cut between any two positions (:mod:`localearn.distributed.pipeline`). In unit
``predictor<k>`` the positions before k stream frozen block outputs and position k fits predictor
k on its block's output; the DFA unit steps every block on the learner's base chain.

The frozen blocks' features are memoised by the content of the rows that enter them
(:mod:`localearn.feature_cache`): in one process that is the batch itself, on a pipeline rank the
activations it receives, which repeat every epoch, so each rank caches what it computes.

Scores: predictor k's ``s_k`` is position k's vote. For the prediction with ``aggregate="prob"``
the votes are probabilities ``q_k`` (softmax, or sparsemax for the sparsemax loss) and the rule is
``log(mean_k q_k)``; ``logits`` sums the raw ``s_k``; a predictor unit is scored on its raw ``s_k``
and the DFA unit on the auxiliary head.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import chain
from typing import Any, cast

import torch
from torch import Tensor

from localearn.feature_cache import FeatureCache
from localearn.layer import Context
from localearn.learner import LocalLearner, Losses, Stage

from .layers import CafoBlock, CafoPredictor
from .sparsemax import sparsemax


class CafoChain(LocalLearner):
    """The chain part of :class:`~localearn.algorithms.cafo.CaFo` (see the module docstring)."""

    num_blocks: int
    aggregate: str
    predictor_loss: str
    cache_features: bool
    cache: FeatureCache
    _train_cache_on: bool
    _epoch_counts: list[int]

    @property
    def blocks(self) -> list[CafoBlock]:
        return [cast(CafoBlock, m) for m in self.layers[: self.num_blocks]]

    @property
    def predictors(self) -> list[CafoPredictor]:
        return [cast(CafoPredictor, m) for m in self.layers[self.num_blocks :]]

    def positions(self) -> list[tuple[int, ...]]:
        """Position k: block k and predictor k."""
        return [(k, self.num_blocks + k) for k in range(self.num_blocks)]

    # ----------------------------------------------------------------------------- training
    def step_positions(self, h: Any, ctx: Context, stage: Stage,
                       positions: Sequence[tuple[int, ...]]) -> tuple[Any, Losses]:
        """DFA unit: every block steps (the base chain over the blocks). Predictor unit: the frozen
        blocks' features (memoised), then the unit's predictor fits them."""
        blocks = [blk for blk, _ in positions]
        if stage.name == "dfa":
            return super().step_positions(h, ctx, stage, [(blk,) for blk in blocks])
        losses: Losses = {}
        for n, (_, pred) in enumerate(positions):
            if pred in stage.layers:
                h = self._features(h, blocks[: n + 1], training=True)
                predictor = self.predictors[pred - self.num_blocks]
                losses[f"loss/{predictor.layer_name}"] = predictor.fit_batch(h, ctx)
                return h, losses
        return self._features(h, blocks, training=True), losses  # frozen blocks for a later rank

    def _token(self, blocks: Sequence[int], device: torch.device) -> Hashable:
        """What the blocks' features depend on: every tensor of theirs, and its version."""
        tensors = chain.from_iterable(chain(self.layers[b].parameters(), self.layers[b].buffers()) for b in blocks)
        return (tuple(blocks), str(device), tuple((t.data_ptr(), t._version) for t in tensors))

    def _features(self, x: Tensor, blocks: Sequence[int], training: bool) -> Tensor:
        """The blocks' output under no-grad, memoised by input content while they are frozen."""
        def compute(inp: Tensor) -> Tensor:
            with torch.no_grad():
                for b in blocks:
                    inp = self.layers[b](inp)
            return inp

        if not blocks:
            return x
        if (not self.cache_features or any(self.layers[b].training for b in blocks)
                or (training and not self._train_cache_on)):
            return compute(x)
        before = (self.cache.lookups, self.cache.hits)
        h = self.cache.lookup(x, self._token(blocks, x.device), compute)
        if training:
            self._epoch_counts[0] += self.cache.lookups - before[0]
            self._epoch_counts[1] += self.cache.hits - before[1]
        return h

    # ---------------------------------------------------------------------------- inference
    def normalise(self) -> Any:
        """Scores to the probabilities that ``prob`` aggregation averages."""
        return sparsemax if self.predictor_loss == "sparsemax" else (lambda s: torch.softmax(s, -1))

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """``x``; the context says what position votes are (probabilities, raw scores, the DFA head)."""
        extras = {"dfa": stage is not None and stage.name == "dfa",
                  "probs": stage is None and self.aggregate == "prob"}
        return x, Context(None, self.num_classes, extras)

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Block p's output and, if it votes, predictor p's scores (or the DFA head on the last block)."""
        h = self.layers[p](h)
        if not vote:
            return h, None
        if ctx["dfa"]:
            block = self.blocks[p]
            return h, block.aux_scores(h) if block.head is not None else None
        predictor = self.predictors[p]
        predictor.finalize()  # a closed-form predictor's pending sums become its weights
        s = predictor(h)
        return h, self.normalise()(s) if ctx["probs"] else s

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """Every block for the prediction; block k for unit ``predictor<k>``; the last for ``dfa``."""
        if stage is None:
            return tuple(range(self.num_blocks))
        if stage.name == "dfa":
            return (self.num_blocks - 1,)
        return tuple(i - self.num_blocks for i in stage.layers)

    def combine(self, total: Tensor, stage: Stage | None) -> Tensor:
        """``log(mean_k q_k)`` for the ``prob`` prediction; the sum otherwise."""
        if stage is None and self.aggregate == "prob":
            return torch.log((total / self.num_blocks).clamp_min(1e-12))
        return total
