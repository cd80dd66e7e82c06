"""Backprop on the same architecture as the local learner it is compared with.

Rumelhart, Hinton & Williams, *Learning representations by back-propagating errors*, Nature 1986.

STUDY_PROTOCOL.md §6 ("same-architecture baselines"): the BP arm is the learner's own trunk
(the same :func:`~localearn.arch.build_trunk` blocks and initialisation) without its local heads,
plus one ``Linear(D_L, C)`` head initialised N(0, 0.01) as in the reference, trained with one
global cross-entropy. It is registered as one more learner whose single "layer" is the whole
network, so that every comparison runs through the same trainer, meters and checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from localearn.arch import ArchSpec, build_trunk, flat_dim
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm


class BackpropNetwork(LocalLayer):
    """The whole network as one layer: trunk → flatten → linear head, global cross-entropy."""

    def __init__(self, blocks: list[nn.Module], feat_dim: int, num_classes: int, head_std: float):
        super().__init__()
        self.trunk = nn.Sequential(*blocks)
        self.head = nn.Linear(feat_dim, num_classes)
        nn.init.normal_(self.head.weight, 0.0, head_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x).flatten(1))

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        return F.cross_entropy(h, ctx.y)


@register_algorithm
class Backprop(LocalLearner):
    """End-to-end backprop baseline (see the module docstring).

    Args:
        arch: the shared architecture spec (``mlp:2x1000``, ``cnn:32-128-512``).
        input_shape: one sample's shape.
        num_classes: C.
        schedule: only ``joint``.
        head_std: std of the head's N(0, std) initialisation (0.01, Beyond-BP).
    """

    name = "backprop"
    aliases = ("bp",)
    paper = "Rumelhart, Hinton & Williams, Nature 1986 (same-architecture baseline)"
    schedules = ("joint",)
    block_local = False  # one global loss: the baseline, not a local learner
    coupling = "one global loss: the whole network is one layer trained end to end by backprop"
    pipeline_refusal = "its gradient crosses every layer, so no layer group trains on its own (use --parallel ddp)"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}
    # Beyond-BP's BP arm: AdamW, batch 128, lr / wd selected per dataset (original protocol,
    # MLP 2×1000 on MNIST / F-MNIST, 3×2000 on CIFAR); other datasets keep the AdamW default.
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("localearn default (AdamW as Beyond-BP, STUDY_PROTOCOL.md §7.2)", optimizer="adamw",
                         lr=1e-3, weight_decay=0.0),
        "mnist": recipe("STUDY_PROTOCOL.md §7.4 (BP, MLP MNIST 2x1000, original)", lr=1.976e-4, weight_decay=7.48e-6),
        "fashion_mnist": recipe("STUDY_PROTOCOL.md §7.4 (BP, MLP F-MNIST 2x1000, original)",
                                lr=2.132e-4, weight_decay=2.71e-5),
        "cifar10": recipe("STUDY_PROTOCOL.md §7.4 (BP, MLP CIFAR-10 3x2000, original)",
                          lr=8.116e-5, weight_decay=2.08e-5),
        "cifar100": recipe("STUDY_PROTOCOL.md §7.4 (BP, MLP CIFAR-100 3x2000, original)",
                           lr=1.036e-4, weight_decay=9.11e-6),
    }

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        schedule: str | None = None,
        head_std: float = 0.01,
    ) -> None:
        super().__init__(arch, input_shape, num_classes, schedule)
        blocks, shapes = build_trunk(self.arch, self.input_shape)
        self.add_layer(BackpropNetwork(blocks, flat_dim(shapes[-1]), self.num_classes, head_std))

    def predict(self, x: Tensor) -> Tensor:
        return self.layers[0](x)
