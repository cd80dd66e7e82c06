"""Data parallelism for local learners: each layer's gradient is averaged before its own step.

One DDP wrapper around a whole local network with per-layer stepping lets the ranks drift apart
without an error: DDP's all-reduce completes only at the last backward of the iteration, after
earlier layers have already stepped on their rank-local gradients (measured: parameter gap 0.397
after 5 steps; docs/guides/distributed.md#ddp-per-layer). Here the averaging happens in
the one place every local update passes through, :meth:`LocalLayer.train_step`, between the
layer's backward and its optimizer step (``LocalLayer.grad_sync``), so every layer steps on the
global batch's gradient and the detach invariant stays in one place.

Every rank iterates the same global batches (the same seeded order) and takes its contiguous
share of rows; gradients are weighted by that share, so 2 ranks x B/2 rows give the gradient of
1 rank x B rows (up to float summation order). Random draws (FF negatives, NoProp noise) are
drawn from the same stream on every rank, because some draws decide *what* a step computes
(NoProp's block t): ranks must agree on them, and per-row noise is then repeated across the
ranks' shards (same distribution per row; rows of different shards are correlated).
BatchNorm uses each rank's own batch statistics (as DDP without SyncBatchNorm); rank 0's
running statistics are broadcast after every epoch, before evaluation and the checkpoint.
Evaluation runs replicated on every rank (identical parameters give identical results). A graph
is a single full batch: under DDP every rank holds it whole (correct, but no speed-up).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from localearn.distributed.base import RankBase
from localearn.distributed.transport import guarded
from localearn.errors import ConfigError, LocalearnError
from localearn.layer import LocalLayer


class Replicas:
    """What data parallelism does among the replicas of some layers: average each layer's gradient
    (rows-weighted), share BatchNorm statistics, and check that the replicas agree. ``group``: the
    process group of the replicas (None: every rank); ``first``: the global rank of its first."""

    def __init__(self, rank: int, device: torch.device, group: Any = None, first: int = 0) -> None:
        self.rank, self.device, self.group, self.first = rank, device, group, first
        self.share = 1.0  # this rank's share of the current batch's rows
        self.bytes_sent, self.wait_seconds = 0, 0.0  # the gradient all-reduces

    def hook(self, learner: nn.Module) -> None:
        """Average every local layer's gradient before its step; start from the first's weights."""
        for module in learner.modules():
            if isinstance(module, LocalLayer):
                module.grad_sync = self.sync
        with torch.no_grad():  # identical seeds give identical weights; make it a fact
            for t in (*learner.parameters(), *learner.buffers()):
                guarded(self.rank, f"rank {self.first}",
                        lambda t=t: dist.broadcast(t.data, self.first, group=self.group))

    def rows(self, batches: Iterable[Any], index: int, count: int) -> Iterator[Any]:
        """Replica ``index`` of ``count``'s contiguous share of every batch (its share recorded)."""
        for batch, share in local_rows(batches, index, count):
            self.share = share
            yield batch

    def sync(self, layer: nn.Module) -> None:
        """Replace each gradient of ``layer`` by the rows-weighted mean over ranks, in one
        all-reduce per dtype (a layer's gradients are few and small next to its compute)."""
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        start = time.perf_counter()
        for dtype in {g.dtype for g in grads}:
            group = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in group]).mul_(self.share)
            guarded(self.rank, "a peer in the gradient all-reduce",
                    lambda flat=flat: dist.all_reduce(flat, group=self.group))
            self.bytes_sent += flat.numel() * flat.element_size()
            offset = 0
            for g in group:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        self.wait_seconds += time.perf_counter() - start

    def end_epoch(self, learner: nn.Module) -> None:
        """Broadcast the first replica's buffers (BN statistics), then check the replicas agree."""
        with torch.no_grad():
            for b in learner.buffers():
                if b.is_floating_point():
                    guarded(self.rank, f"rank {self.first}",
                            lambda b=b: dist.broadcast(b.data, self.first, group=self.group))
            params = list(learner.parameters())
            if not params:
                return
            sums = torch.stack([p.detach().double().sum() for p in params]).to(self.device)
            low, high = sums.clone(), sums.clone()
            guarded(self.rank, "a peer", lambda: dist.all_reduce(low, op=dist.ReduceOp.MIN, group=self.group))
            guarded(self.rank, "a peer", lambda: dist.all_reduce(high, op=dist.ReduceOp.MAX, group=self.group))
        if not torch.equal(low, high):
            raise LocalearnError(f"rank {self.rank}: the data-parallel replicas diverged (parameter sums differ "
                                 f"by up to {float((high - low).abs().max()):.3g}); a step bypassed "
                                 "LocalLayer.train_step's gradient averaging")


class DataParallel(RankBase):
    """``--parallel ddp`` (see the module docstring)."""

    mode = "ddp"

    def __init__(self, config: Any, device: torch.device) -> None:
        super().__init__(config, device)
        self.replicas = Replicas(self.rank, device)
        self.replicas.share = 1.0 / self.world_size

    def setup(self, trainer: Any) -> None:
        learner = trainer.learner
        reason = getattr(learner, "ddp_refusal", "")
        if reason:
            raise ConfigError(f"{learner.name} cannot run --parallel ddp: {reason}")
        self.replicas.hook(learner)

    def batches(self, batches: Iterable[Any], stage: Any) -> Iterator[Any]:
        return self.replicas.rows(batches, self.rank, self.world_size)

    def end_epoch(self, trainer: Any) -> None:
        self.agree()  # a non-finite rank stops every rank, before the checksums can disagree
        self.replicas.end_epoch(trainer.learner)

    def rank_info(self) -> dict[str, Any]:
        return {"layers": "all", "batch_share": round(self.replicas.share, 4)}

    def traffic(self) -> dict[str, Any]:
        return {"bytes_sent": self.replicas.bytes_sent, "wait_seconds": self.replicas.wait_seconds}


def local_rows(batches: Iterable[Any], rank: int, world: int) -> Iterator[tuple[Any, float]]:
    """This rank's contiguous slice of every batch, with its share of the batch's rows."""
    for batch in batches:
        if isinstance(batch, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in batch):
            n = int(batch[0].shape[0])
            part = type(batch)(torch.tensor_split(t, world)[rank] for t in batch)
            yield part, int(part[0].shape[0]) / max(n, 1)
        else:  # a graph is one full batch: every rank holds all of it (replicated)
            yield batch, 1.0 / world
