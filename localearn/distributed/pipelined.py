"""What a learner gives ``--parallel pipeline``: its chain positions, a rank's step, its votes.

Because no gradient crosses a layer, a local learner's chain can be cut between any two layers
(DESIGN.md, "Scaling past one machine"); what a learner must say is where the cuts may go and
how a cut chain is scored. It opts in by deriving from :class:`Pipelined` instead of
:class:`~localearn.learner.LocalLearner`. The defaults fit a plain chain whose layer i feeds
layer i+1 (Mono-Forward, Forward-Forward); a learner with side layers (CaFo's predictor on each
block) or with messages other than the previous output (NoProp-DT's image and latent,
ForwardGNN's graph) overrides the parts that differ:

* :meth:`~Pipelined.pipeline_positions`: the chain positions, each a tuple of layer indices that
  must live on one rank (CaFo: block k with its predictor k). Ranks hold contiguous positions.
* :meth:`~Pipelined.pipeline_step`: one rank's training step over its positions of the unit
  (default: the learner's own :meth:`~localearn.learner.LocalLearner.chain`).
* :meth:`~Pipelined.pipeline_eval_input`, :meth:`~Pipelined.pipeline_eval`,
  :meth:`~Pipelined.pipeline_votes`, :meth:`~Pipelined.pipeline_scores`: evaluation as a running
  sum of the voting positions' class scores that travels with the activations, turned into the
  prediction's scores by the rank holding the last vote.

Everything a position needs beside its input travels in the :class:`~localearn.layer.Context`
(tensors and plain scalars only), so a learner's messages are its own business, not the
transport's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from localearn.layer import Context
from localearn.learner import LocalLearner, Stage


class Pipelined(LocalLearner):
    """A learner that ``--parallel pipeline`` can place across ranks (see the module docstring).

    A variant that cannot be pipelined sets ``self.pipeline_refusal`` to the reason in its
    ``__init__`` (one line, shown to the user)."""

    pipeline_refusal: str = ""

    def pipeline_positions(self) -> list[tuple[int, ...]]:
        """The chain's positions in order; position p's layers live on one rank."""
        return [(i,) for i in range(len(self.layers))]

    def pipeline_step(self, h: Any, ctx: Context, stage: Stage,
                      positions: Sequence[tuple[int, ...]]) -> tuple[Any, dict[str, float]]:
        """This rank's part of one training step: ``positions`` (its own, up to the unit's last)
        on the input ``h`` it built or received; returns the output for the next rank and the
        per-layer losses. The default is the learner's chain over those layers."""
        return self.chain(h, ctx, stage, [i for pos in positions for i in pos])

    def pipeline_eval_input(self, batch: Any) -> tuple[Any, Context]:
        """Rank 0's first evaluation input and its context (``ctx.y``: the rows to score)."""
        x, y = self.split_batch(batch)
        return x, Context(y=y, num_classes=self.num_classes)

    def pipeline_eval(self, p: int, h: Any, ctx: Context, stage: Stage | None,
                      vote: bool) -> tuple[Any, Tensor | None]:
        """Position p on evaluation input ``h``: its output and, if it votes, its ``(rows, C)``
        contribution to the summed scores."""
        for i in self.pipeline_positions()[p]:
            h = self.local_layers[i].infer(h, ctx)
        return h, self.pipeline_score(p, h, ctx, stage) if vote else None

    def pipeline_score(self, p: int, h: Tensor, ctx: Context, stage: Stage | None) -> Tensor:
        """Position p's class scores from its output (used by the default :meth:`pipeline_eval`)."""
        raise NotImplementedError(f"{self.name} must give pipeline_score or pipeline_eval")

    def pipeline_votes(self, stage: Stage | None) -> tuple[int, ...]:
        """The positions whose scores sum to the scores of ``stage`` (None: the prediction)."""
        raise NotImplementedError(f"{self.name} must say which positions vote")

    def pipeline_scores(self, total: Tensor, stage: Stage | None) -> Tensor:
        """The sum of the votes as the scores whose cross-entropy and argmax are reported (the
        same as ``predict`` / ``unit_scores``); a plain sum by default."""
        return total
