"""NoProp-DT's training steps and denoising chain, in one process and across pipeline ranks.

Li, Teh & Pascanu, *NoProp*, arXiv 2503.24322 (docs/learners/noprop.md#dt). Block t never reads
another block's output in training: it sees the image, a q-sample of its own noisy label and the
class embeddings. With fixed (one-hot) embeddings the blocks and the head are therefore
independent, and the chain can be cut anywhere (:mod:`localearn.distributed.pipeline`): a
training message is the batch itself (image, labels and, for ``blocks_per_step="one"``, the
block drawn by rank 0); each rank steps its own blocks, the rank holding the head steps it once
per block step, as one process does.

The noise of block t's step (its q-sample and its dropout) and of the head's step after it comes
from a generator seeded by (the learner's noise seed, the step count, t), not from the global
stream, so a pipeline rank draws exactly the numbers one process draws for the same block:
pipelined training equals one process to float tolerance, and a resumed run continues the same
sequence (the step count is a buffer). Evaluation carries the latent ``z_t`` from rank to rank
with the image in the context; the last rank's head scores ``z_T``.

Learned and prototype embeddings refuse the pipeline: every block reads W_Embed, which the head
learns on every step, so the blocks would need it from the last rank.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from localearn.layer import Context
from localearn.learner import LocalLearner, Losses, Stage

from .common import NoPropHead, class_medoids


class DTSteps(LocalLearner):
    """The step and chain parts of :class:`~localearn.algorithms.noprop.dt.NoPropDT`."""

    T: int
    embedding_kind: str
    blocks_per_step: str
    inference: str
    alpha_bar: Tensor
    weight: Tensor
    a: Tensor
    b: Tensor
    c: Tensor
    noise_seed: Tensor
    step_count: Tensor
    host: dict[str, Any]  # host copies of the schedule, the noise seed and the step count

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before the noise streams existed lack them: keep this learner's own
        # (a resumed run then continues from step 0 of a fresh stream).
        for key in ("noise_seed", "step_count"):
            state_dict.setdefault(prefix + key, getattr(self, key))
        super()._load_from_state_dict(state_dict, prefix, *args)
        head = self.layers[self.T]
        ready = bool(head.ready) if isinstance(head, NoPropHead) else True
        self.host.update(seed=int(self.noise_seed), steps=int(self.step_count), ready=ready)  # once per load

    def embed_on(self, like: Tensor) -> Tensor:
        """W_Embed without gradient. One-hot embeddings are the identity on every rank, so a rank
        that does not hold the head needs nothing from it."""
        head = self.layers[self.T]
        if isinstance(head, NoPropHead):
            return head.embedding()
        return torch.eye(self.num_classes, device=like.device, dtype=like.dtype)

    def make_context(self, batch: Any) -> Context:
        """Labels, and the block this step trains when ``blocks_per_step="one"``: drawn once (on
        rank 0 in a pipeline) on the host, from the noise seed and the step count."""
        ctx = super().make_context(batch)
        head = self.layers[self.T]
        if self.embedding_kind == "prototype" and isinstance(head, NoPropHead) and not self.host["ready"]:
            x, y = self.split_batch(batch)
            with torch.no_grad():  # the first training batch's class medoids (see common.py)
                head.embed.copy_(class_medoids(x, y, self.num_classes))
                head.ready.fill_(True)
            self.host["ready"] = True
        if self.schedule_mode == "joint" and self.blocks_per_step == "one":
            ctx.extras["t"] = random.Random(self.host["seed"] * 1_000_003 + self.host["steps"]).randint(1, self.T)
        return ctx

    @contextmanager
    def _seeded(self, x: Tensor, seed: int) -> Iterator[None]:
        """Draw from a private stream seeded by ``seed``; the global stream is restored afterwards."""
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.random.default_generator.manual_seed(seed)
            if x.is_cuda:
                torch.cuda.manual_seed(seed)  # this rank's device only
            yield

    def step_positions(self, h: Any, ctx: Context, stage: Stage,
                       positions: Sequence[tuple[int, ...]]) -> tuple[Any, Losses]:
        """The step's blocks held in ``positions``, each followed by the head's step when the head
        is held too; the batch travels on unchanged. With every position (one process) ``loss`` is
        the mean over the step's blocks of L_t = CE + KL + L2."""
        mine = {i for pos in positions for i in pos}
        x, y = h, ctx.y
        assert y is not None
        if self.schedule_mode == "greedy":
            ts = [stage.layers[0] + 1]
        else:
            ts = [int(ctx["t"])] if self.blocks_per_step == "one" else list(range(1, self.T + 1))
        embed = self.embed_on(x)
        u = embed[y]
        head = self.layers[self.T] if self.T in mine else None
        logs: Losses = {}
        total: list[Tensor] = []
        # One stream per (step, block t, part): 0 the block's step, 1 the head's step after it.
        base = self.host["seed"] * 1_000_003 + self.host["steps"] * 2 * (self.T + 1)
        for t in ts:
            l2: Tensor | None = None
            terms: list[tuple[float, Tensor]] = []
            if t - 1 in mine:
                with self._seeded(x, (base + 2 * t) % 2**63):
                    bar, weight = self.host["alpha_bar"][t - 1], self.host["weight"][t]
                    z = math.sqrt(bar) * u + math.sqrt(1 - bar) * torch.randn_like(u)
                    ctx_t = Context(y, self.num_classes, {"z": z, "embed": embed, "target": u, "weight": weight})
                    logits, l2 = self.local_layers[t - 1].train_step(x, ctx_t)
                terms = [(weight, logits)]
                logs[f"loss/block{t}"] = l2
            if isinstance(head, NoPropHead):
                with self._seeded(x, (base + 2 * t + 1) % 2**63):
                    eps = torch.randn(len(y), head.dim, device=u.device, dtype=u.dtype)
                    _, head_loss = head.train_step(eps, Context(y, self.num_classes, {"block_terms": terms}))
                # L_t = CE + KL + L2; the head's loss already holds the L2 term when W_Embed is learned.
                if head.trainable:
                    total.append(head_loss)
                elif l2 is not None:
                    total.append(head.last_ce + l2)
                logs["loss/head_ce"] = head.last_ce
        self.step_count += 1
        self.host["steps"] += 1
        if total and len(mine) == len(self.layers):  # the objective is whole in one process only
            logs["loss"] = torch.stack(total).sum() / len(ts)
        return h, logs

    # ---------------------------------------------------------------------------- inference
    def denoise(self, t: int, x: Tensor, z: Tensor, embed: Tensor) -> tuple[Tensor, Tensor]:
        """Block t on (x, z_{t−1}): its logits ℓ_t and ``z_t = a_t û_t + b_t z_{t−1} (+ √c_t ε)``."""
        logits = self.layers[t - 1](x, z)
        z = self.a[t] * (F.softmax(logits.float(), dim=1) @ embed.float()) + self.b[t] * z
        if self.inference == "stochastic":
            z = z + self.c[t].sqrt() * torch.randn_like(z)
        return logits, z

    def start_latent(self, x: Tensor, embed: Tensor) -> Tensor:
        """z_0: N(0, I) for stochastic inference, its mean (zeros) for ``mean``."""
        shape = (x.shape[0], embed.shape[1])
        if self.inference == "stochastic":
            return torch.randn(shape, device=x.device)
        return torch.zeros(shape, device=x.device)

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """z_0, with the image in the context (every block reads it)."""
        return self.start_latent(x, self.embed_on(x)), Context(None, self.num_classes, {"x": x})

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Block p+1 carries z on (its logits vote in a greedy unit); the head scores z_T."""
        if p == self.T:
            return h, self.layers[self.T](h)
        logits, z = self.denoise(p + 1, ctx["x"], h, self.embed_on(h))
        return z, logits if vote else None

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """The head for the prediction (and the joint unit); block t's own logits for greedy unit t."""
        if stage is not None and self.schedule_mode == "greedy":
            return (stage.layers[0],)
        return (self.T,)
