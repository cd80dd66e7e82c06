"""The layer pipeline: each rank trains a contiguous group of chain positions on what it receives.

Rank 0 loads the batch and builds the layer context (``learner.make_context``: labels, FF's
negatives, ForwardGNN's graph); every rank runs its positions of the learner's chain
(``learner.step_positions``, the same code one process runs: the unit's layers step through
``LocalLayer.train_step``, frozen ones run under no-grad) and sends its detached output and the
context's tensors to the next rank (:mod:`.transport`). A layer's output on batch t is computed
before its own step on t, in one process as here, so the pipelined joint schedule computes
exactly what the single-process joint schedule computes; only the order in which different
layers work on different batches changes. A greedy unit is pipelined too: the ranks before it
stream the frozen prefix while it trains; ranks after it wait.

Evaluation runs through the same chain: rank 0 builds the evaluation input
(``learner.eval_input``), each rank runs its positions (``learner.run_position``) and adds the
votes of those that vote (``learner.votes``) to a running sum that travels with the activations,
and the rank holding the last vote applies the prediction rule (``learner.combine``), scores the
result with the run's task (``Task.batch_totals``, as one process does) and broadcasts the totals,
so the stopping rule decides alike everywhere.

With ``replicas`` D > 1 (``--replicas``) the ranks form D copies of a pipeline of world/D ranks:
each copy's first rank takes its share of every batch's rows, the share travels with the
activations, and the copies of one layer group average their gradients before each layer's step
(:class:`~localearn.distributed.ddp.Replicas`, over a process group of just those ranks), so the
result is that of one process with the whole batch. Copy 0 evaluates; the others wait for its result.

Every learner declares its chain (:mod:`localearn.learner`); one whose layers need something from
later layers sets ``pipeline_refusal`` to the reason (CCL's feedback network, collaborative FF's
summed goodness, CaFo-DFA's error), and ``--parallel pipeline`` refuses it, as it refuses a chain of
one position.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from localearn.distributed.base import RankBase
from localearn.distributed.ddp import Replicas
from localearn.distributed.split import split_layers
from localearn.distributed.transport import Link, guarded, pack_context, unpack_context
from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.utils import to_device

SHARE = "localearn/share"  # a message's rows share under --replicas (not a context value)
ROWS = "localearn/rows"  # the scored rows of an evaluation batch (graph learners' node mask)


class Elsewhere(LocalLayer):
    """Stands in for a layer that lives on another rank (keeps indices and names stable)."""

    def __init__(self, name: str, rank: int) -> None:
        super().__init__()
        self.layer_name, self.owner = name, rank

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(f"{self.layer_name} lives on rank {self.owner}")


class Received:
    """A training batch that arrived from the previous rank: its activations and layer context
    (already on this rank's device; ``rows`` counts the batch's samples)."""

    def __init__(self, h: Tensor, ctx: Context) -> None:
        self.h, self.ctx = h, ctx
        self.rows = int(ctx.y.shape[0]) if ctx.y is not None else int(h.shape[0])

    def to(self, device: torch.device) -> Received:
        return self


class PipelineParallel(RankBase):
    """``--parallel pipeline`` (see the module docstring)."""

    mode = "pipeline"
    layer_scores = False

    def __init__(self, config: Any, device: torch.device) -> None:
        super().__init__(config, device)
        self.link = Link(self.rank, device, config.pipeline_depth, config.dist_timeout)
        # --replicas D: D copies of a pipeline of world/D ranks (rank = replica * pipe_size +
        # pipe_rank); the copies of one group of layers average their gradients (.ddp.Replicas).
        self.copies = count = int(config.replicas)
        if count < 1 or self.world_size % count:
            raise ConfigError(f"--replicas {count} must divide the {self.world_size} ranks")
        self.pipe_size = self.world_size // count
        self.pipe_rank, self.replica = self.rank % self.pipe_size, self.rank // self.pipe_size
        self.replicas: Replicas | None = None
        if count > 1:  # every rank creates every group, in the same order
            groups = [dist.new_group([d * self.pipe_size + g for d in range(count)]) for g in range(self.pipe_size)]
            self.replicas = Replicas(self.rank, device, groups[self.pipe_rank], first=self.pipe_rank)
        self.groups: list[range] = []  # chain positions per rank
        self.mine = range(0)
        self.position: dict[int, int] = {}  # layer index -> its chain position
        self._positions: list[tuple[int, ...]] = []
        self._classes = 0

    # ---------------------------------------------------------------------------------- setup
    def setup(self, trainer: Any) -> None:
        learner = trainer.learner
        positions = learner.positions()
        reason = learner.pipeline_refusal or ("its chain is one position" if len(positions) < 2 else "")
        if reason:
            raise ConfigError(f"{learner.name} cannot run --parallel pipeline: {reason}")
        if learner.task != "classification":
            raise ConfigError(f"--parallel pipeline scores classification only, not the {learner.task} task")
        if self.replicas is not None and learner.ddp_refusal:
            raise ConfigError(f"{learner.name} cannot run --replicas: {learner.ddp_refusal}")
        self._classes = learner.num_classes
        self.position = {i: p for p, pos in enumerate(positions) for i in pos}
        layers = learner.local_layers
        sizes = [sum(q.numel() for i in pos for q in layers[i].parameters()) for pos in positions]
        self.groups = split_layers(sizes, self.pipe_size, self.config.split)
        self.mine = self.groups[self.pipe_rank]
        self._positions = positions
        for i, layer in enumerate(layers):
            if self.position[i] not in self.mine:  # built on every rank from one seed, then dropped
                owner = self.replica * self.pipe_size + self._owner(self.position[i])
                learner.layers[i] = Elsewhere(layer.layer_name, owner)
        learner.prefix_cache = None  # each rank recomputes only its own frozen layers
        trainer.optimizers = learner.optimizers()
        if self.replicas is not None:
            self.replicas.hook(learner)

    def _owner(self, position: int) -> int:
        """The pipeline rank (0 .. pipe_size-1) holding ``position``."""
        return next(r for r, g in enumerate(self.groups) if position in g)

    def _last(self, stage: Any) -> int:
        """The last chain position the unit trains (-1: none)."""
        return max((self.position[i] for i in stage.layers), default=-1)

    # ------------------------------------------------------------------------------- training
    def batches(self, batches: Iterable[Any], stage: Any) -> Iterable[Any]:
        last = self._last(stage)
        if self.pipe_rank == 0:
            # Under --replicas the later ranks of this copy read the share from the message.
            mine = batches if self.replicas is None else self.replicas.rows(batches, self.replica, self.copies)
            return self._ended(mine) if self.mine.stop <= last else mine
        if self.mine.start > last:  # this unit ends before this rank: nothing arrives
            return iter(())
        return self._arrivals(last)

    def _ended(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Rank 0's batches, then the epoch's ``end`` message (its last step has sent its output)."""
        yield from batches
        self.link.end(self.rank + 1)

    def _arrivals(self, last: int) -> Iterator[Received]:
        """What the previous rank sends until its ``end``, which this rank passes on if a later rank
        works for the unit; so no rank but the first touches the training data."""
        for tensors, scalars in self.link.stream(self.rank - 1, "train"):
            h = tensors.pop("h")
            share = scalars.pop(SHARE, None)
            if self.replicas is not None:
                self.replicas.share = float(share)
            assert h is not None
            yield Received(h, unpack_context(tensors, scalars, self._classes))
        if self.mine.stop <= last:
            self.link.end(self.rank + 1)

    def step(self, learner: Any, batch: Any, stage: Any) -> dict[str, Tensor]:
        last = self._last(stage)
        if isinstance(batch, Received):
            h, ctx = batch.h, batch.ctx
        else:
            ctx = learner.make_context(batch)
            h = ctx.inputs if ctx.inputs is not None else learner.split_batch(batch)[0]
        mine = self._positions[self.mine.start:min(self.mine.stop, last + 1)]
        h, losses = learner.step_positions(h, ctx, stage, mine)
        if self.mine.stop <= last:  # a later rank trains or forwards for this unit
            tensors, scalars = pack_context(ctx)
            if self.replicas is not None:
                scalars[SHARE] = self.replicas.share
            self.link.send(self.rank + 1, "train", {"h": h, **tensors}, scalars)
        if losses and "loss" not in losses:  # this rank's share of the step's losses
            losses["loss"] = torch.stack(list(losses.values())).mean()
        return losses

    def end_epoch(self, trainer: Any) -> None:
        self.link_flush()
        self.agree()
        if self.replicas is not None:
            self.replicas.end_epoch(trainer.learner)

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, trainer: Any, split: str, stage: Any) -> dict[str, float]:
        learner = trainer.learner
        learner.eval()
        votes = tuple(learner.votes(stage))
        need = max(votes)
        owner = self._owner(need)
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.replica == 0 and self.pipe_rank <= owner:  # replica 0 scores; the others wait
            for h, scores, ctx in self._eval_inputs(trainer, split, stage):
                for p in range(self.mine.start, min(self.mine.stop, need + 1)):
                    h, s = learner.run_position(p, h, ctx, p in votes)
                    if s is not None:
                        scores = s if scores is None else scores + s
                if self.pipe_rank < owner:
                    tensors, scalars = pack_context(ctx)
                    self.link.send(self.rank + 1, "eval", {"h": h, "scores": scores, **tensors}, scalars)
                else:
                    assert scores is not None and ctx.y is not None
                    final, rows = learner.combine(scores, stage), ctx.extras.pop(ROWS, None)
                    totals += trainer.task.batch_totals(final if rows is None else final[rows], ctx.y)
            if self.pipe_rank < owner:
                self.link.end(self.rank + 1)
                self.link.flush(self.rank + 1)
        guarded(self.rank, f"rank {owner}", lambda: dist.broadcast(totals, owner))
        loss_sum, metric_sum, n = totals.tolist()
        metric = trainer.task.metric
        return {"loss": loss_sum / max(n, 1.0), metric: metric_sum / max(n, 1.0), "samples": int(n)}

    def _eval_inputs(self, trainer: Any, split: str, stage: Any) -> Iterator[tuple[Any, Any, Context]]:
        """Rank 0: each evaluation batch's chain input (labels and scored rows in the context, to
        travel to the last voter). Later ranks: what arrives, until the previous rank's ``end``, so
        no rank but the first touches the data."""
        learner = trainer.learner
        if self.pipe_rank > 0:
            for tensors, scalars in self.link.stream(self.rank - 1, "eval"):
                h, scores = tensors.pop("h"), tensors.pop("scores")
                yield h, scores, unpack_context(tensors, scalars, self._classes)
            return
        for batch in trainer.data.eval_batches(split, 2 * self.config.batch_size):
            batch = to_device(batch, self.device)
            x, y = learner.split_batch(batch)
            h, ctx = learner.eval_input(x, stage)
            ctx.y = y
            ctx.extras[ROWS] = learner.eval_rows(batch)
            yield h, None, ctx

    def link_flush(self) -> None:
        if self.pipe_rank + 1 < self.pipe_size:
            self.link.flush(self.rank + 1)

    def close(self, finished: bool = True) -> None:
        super().close(finished)
        self.link.close()  # shared-memory links: their sockets and mappings

    def traffic(self) -> dict[str, Any]:
        reps = self.replicas
        return {"bytes_sent": self.link.bytes_sent + (reps.bytes_sent if reps else 0),
                "wait_seconds": self.link.wait_seconds + (reps.wait_seconds if reps else 0.0),
                "transport": self.link.transports()}

    def rank_info(self) -> dict[str, Any]:
        own = [i for pos in self._positions[self.mine.start:self.mine.stop] for i in pos]
        return {"layers": sorted(own), "positions": [self.mine.start, self.mine.stop - 1] if len(self.mine) else [],
                "groups": [[g.start, g.stop - 1] for g in self.groups],
                **({"replica": self.replica, "batch_share": round(self.replicas.share, 4)} if self.replicas else {})}
