"""NoProp-DT: T independent denoising blocks, each trained by its own local loss.

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322 (docs/learners/noprop.md#dt).

Block t maps (x, z_{t−1}) to class logits ℓ_t; its prediction of the label embedding is
û_t = softmax(ℓ_t) W_Embed. Training never chains blocks: block t sees a q-sample
``z_{t−1} = √ᾱ_{t−1} u_y + √(1−ᾱ_{t−1}) ε``, and its loss is

    L_t = CE(Linear_out(z_T), y) + KL(q(z_0|y) ‖ N(0,I)) + (T·η/2)(SNR(t) − SNR(t−1)) ‖û_t − u_y‖²

with z_T an independent q-sample. Of these terms only the L2 one reaches θ_t, so block t's layer
steps on it alone (with sg W_Embed); the CE, the KL (½ᾱ_0‖u_y‖², learned embeddings only) and
the L2 term's gradient on W_Embed are minimised in the same ``train_step`` by the shared
:class:`~localearn.algorithms.noprop.common.NoPropHead` layer (Linear_out + W_Embed, its own
optimizer), right after the block's step and with the block's logits detached. The sum of the two
steps' gradients equals ∇L_t; each optimizer only ever sees its own parameters' gradients.

Schedules: ``joint`` (one unit; ``blocks_per_step="one"``: one random t per step, the paper's
"sampling t" variant; ``"all"``: every block steps on every batch in turn, each on its own
q-samples, which is Algorithm 1's per-epoch work with the loops interleaved) and ``greedy`` (one
training unit per block, block t then frozen: Algorithm 1's outer loop over t with each block
trained to its own stopping point; the head trains in every unit).

Inference: z_0 ~ N(0, I), ``z_t = a_t û_t + b_t z_{t−1} + √c_t ε``, scores = Linear_out(z_T).
``inference="mean"`` drops √c_t ε and starts from z_0 = 0 (the prior's mean), so the path is
deterministic; ``"stochastic"`` (default) is the paper's sampler.

Architecture (paper figure): image path = the ``cnn:`` spec's conv3×3 → ReLU → maxpool2 →
dropout 0.2 per entry (default ``cnn:32-64-128``) → flatten → FC(width) → BN; z path =
FC(width) → BN → ReLU → [FC → BN → ReLU → FC → BN] + skip; fusion = concat →
FC(width) → BN → ReLU → FC(hidden) → BN → ReLU → FC(C). width 256, hidden 128 by default.
With prototype embeddings z_{t−1} is reshaped to the image shape and passed through the block's
own image conv stack (weights shared with x's path) before the z path.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform

from .common import NoPropHead, check_choice, conv_stack, make_embedding
from .dt_steps import DTSteps
from .schedule import discrete_schedule

INFERENCE = ("stochastic", "mean")
BLOCKS_PER_STEP = ("one", "all")


def _fc_bn(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o)]


class DenoisingBlock(LocalLayer):
    """One NoProp-DT block f_θt(x, z_{t−1}) → ℓ_t; its local loss is the weighted L2 term."""

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...], embed_dim: int,
                 num_classes: int, width: int, hidden: int, dropout: float, prototype: bool) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.prototype = prototype
        self.conv, feat = conv_stack(input_shape, channels, dropout)
        self.img = nn.Sequential(nn.Flatten(), *_fc_bn(feat, width))
        self.z_in = nn.Sequential(*_fc_bn(feat if prototype else embed_dim, width), nn.ReLU())
        self.z_res = nn.Sequential(*_fc_bn(width, width), nn.ReLU(), *_fc_bn(width, width))
        self.fuse = nn.Sequential(*_fc_bn(2 * width, width), nn.ReLU(), *_fc_bn(width, hidden),
                                  nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """Logits ℓ_t of images ``x`` and latents ``z`` (B, d); a block always needs both."""
        if z is None:
            raise ValueError("a NoProp block takes (x, z_{t-1}); z is missing")
        if self.prototype:
            z = self.conv(z.view(-1, *self.input_shape)).flatten(1)
        h = self.z_in(z)
        h = h + self.z_res(h)
        return self.fuse(torch.cat([self.img(self.conv(x)), h], dim=1))

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        # Overridden because a block consumes the pair (x, z_{t−1}); z and the targets in ctx are
        # built from sg W_Embed, so the only parameters this loss reaches are the block's own.
        logits = self(x, ctx["z"])
        # In fp32 whatever the autocast precision: the weight (T·η/2)(SNR(t) − SNR(t−1)) reaches the
        # hundreds near the clean end, so a bf16 residual would dominate the gradient.
        u_hat = F.softmax(logits.float(), dim=1) @ ctx["embed"].float()
        return logits, ctx["weight"] * (u_hat - ctx["target"].float()).pow(2).sum(1).mean()


@register_algorithm
class NoPropDT(DTSteps):
    """NoProp-DT (see the module docstring).

    Args:
        arch: ``cnn:C1-C2-...``, the channels of every block's image conv stack.
        input_shape: one image's shape (C, H, W).
        num_classes: C.
        schedule: ``joint`` (default) or ``greedy``.
        T: number of blocks (10).
        eta: scale η of the L2 term (0.1).
        embedding: ``onehot`` (default), ``learned`` or ``prototype``.
        embed_dim: d of learned embeddings (20).
        inference: ``stochastic`` (default) or ``mean``.
        blocks_per_step: joint schedule only: ``one`` random block per step (default) or ``all``.
        width, hidden: the block's path width (256) and last fusion width (128).
        dropout: after each conv pool (0.2).
        max_signal: the clamp on ᾱ_T (0.999), see :mod:`.schedule`.
    """

    name = "noprop"
    aliases = ("noprop_dt",)
    paper = "Li, Teh & Pascanu, NoProp, arXiv 2503.24322 (NoProp-DT)"
    schedule = "joint"
    schedules = ("joint", "greedy")
    default_arch = "cnn:32-64-128"
    test_arch = "cnn:8-16"
    test_options: ClassVar[dict[str, Any]] = {"T": 3, "width": 32, "hidden": 16, "blocks_per_step": "all"}
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-3}
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("docs/learners/noprop.md#reference (NoProp-DT, MNIST: batch 128, 100 epochs, AdamW lr 1e-3 "
                         "wd 1e-3)",
                         # Mean-path inference: validation 0.980 vs 0.949 stochastic (docs/learners/noprop.md#results).
                         {"inference": "docs/learners/noprop.md#pitfall-inference-noise (dropping the sqrt(c_t) noise "
                                       "raised accuracy)"},
                         batch_size=128, epochs=100, optimizer="adamw", lr=1e-3, weight_decay=1e-3,
                         inference="mean"),
        **{name: recipe("docs/learners/noprop.md#reference (NoProp-DT, CIFAR: 150 epochs)", epochs=150)
           for name in ("cifar10", "cifar100", "cifar10_subset")},
    }
    alpha_bar: Tensor  # schedule buffers (float32), index t = 0..T
    weight: Tensor
    a: Tensor
    b: Tensor
    c: Tensor

    # lr and wd over three decades around the paper's AdamW 1e-3 / 1e-3, and the L2 scale η around its 0.1.
    search: ClassVar[dict[str, Dist]] = {"weight_decay": log_uniform(1e-5, 1e-2), "eta": log_uniform(0.01, 1.0)}

    def __init__(
        self,
        *args: Any,
        T: int = 10,
        eta: float = 0.1,
        embedding: str = "onehot",
        embed_dim: int = 20,
        inference: str = "stochastic",
        blocks_per_step: str = "one",
        width: int = 256,
        hidden: int = 128,
        dropout: float = 0.2,
        max_signal: float = 0.999,
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
        if self.arch.kind != "cnn":
            raise ConfigError(f"NoProp's blocks take a cnn:C1-C2-... spec (image path channels), got {self.arch}")
        self.inference = check_choice("inference", inference, INFERENCE)
        self.blocks_per_step = check_choice("blocks_per_step", blocks_per_step, BLOCKS_PER_STEP)
        self.embedding_kind = embedding
        for key, value in (("width", width), ("hidden", hidden)):
            if int(value) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout}")
        sched = discrete_schedule(int(T), float(eta), float(max_signal))
        self.T = int(T)
        for key in ("alpha_bar", "weight", "a", "b", "c"):
            self.register_buffer(key, getattr(sched, key).float(), persistent=False)
        emb, trainable = make_embedding(embedding, self.num_classes, embed_dim, self.input_shape)
        for _ in range(self.T):
            self.add_layer(DenoisingBlock(self.input_shape, self.arch.widths, emb.shape[1], self.num_classes,
                                          int(width), int(hidden), float(dropout), embedding == "prototype"))
        self.add_layer(NoPropHead(emb, trainable, self.num_classes, float(sched.alpha_bar[-1]),
                                  float(sched.alpha_bar[0])))
        # The per-step noise streams (.dt_steps): a base drawn from the run's seed, and the step count.
        self.register_buffer("noise_seed", torch.randint(2**31, ()))
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        # Host copies (.dt_steps): a step reads the schedule, seed and count without a device sync.
        self.host = {"alpha_bar": sched.alpha_bar.tolist(), "weight": sched.weight.tolist(),
                     "seed": int(self.noise_seed), "steps": 0, "ready": bool(self.head.ready)}
        if embedding != "onehot":  # .dt_steps
            self.pipeline_refusal = (f"every block reads the {embedding} class embeddings, "
                                     "which the head learns on each step")

    @property
    def blocks(self) -> list[DenoisingBlock]:
        return [cast(DenoisingBlock, layer) for layer in list(self.layers)[: self.T]]

    @property
    def head(self) -> NoPropHead:
        head = self.layers[self.T]
        assert isinstance(head, NoPropHead)
        return head

    def stages(self) -> list[Stage]:
        """``greedy``: block t with the shared head, per block; ``joint``: everything at once."""
        if self.schedule_mode == "greedy":
            return [Stage(f"block{t + 1}", (t, self.T)) for t in range(self.T)]
        return [Stage("network", tuple(range(self.T + 1)))]
