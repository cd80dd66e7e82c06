"""AugLocal: local learning with auxiliary networks built from the network's own later layers.

Ma, Wu, Si & Tan, *Scaling Supervised Local Learning with Augmented Auxiliary Networks*, ICLR 2024
(code: ChenxiangMA/AugLocal). Block l's auxiliary network is a stack of copies of a uniformly
picked subset of the blocks after it, then a pooling + linear head; its loss is the cross-entropy of
that network. Rules as the released code (``auxiliary_nets.py``'s ``unifSamp``, ``resnet.py``):

* depth: ``d_l = max(1, round(d - (d-1)·τ·l/(K-2)))`` for l = 0..K-2 with τ = 0.5 (every released
  script), so the depth shrinks linearly from ``d`` (``aug_depth``) toward the output;
* picks: every later block when ``d_l >= K-1-l``, else ``round(l + j(K-1-l)/d_l)`` for j = 1..d_l
  (Python's rounding, halves to even); the last block is always the last pick.

Generic variant (documented deviation): each pick is a deep copy of that block with its
parameters re-drawn (every submodule's ``reset_parameters``), rather than a new BasicBlock built
from a width list, so any block of any model works; where the features entering a copy differ in
shape from that block's own input (a skipped block changed the width or size), a 1×1 conv with BN
(feature maps; strided, or pooled, to the size) or a linear map (tokens, vectors) adapts them, as the
code's projection shortcut does. A model's last block is copied without its classifier. Also
simplified: the BatchNorm1d that the code puts before the linear head when d_l <= 1, and the code's
merge of the last d+1 layers into one module (``K <- K - d``): here the module count is the ``K``
asked for; its recipe (InfoPro's SGD, 400 epochs) is the recipe on full CIFAR only, other image data
take the shared Adam at 1e-3.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from localearn.errors import ConfigError
from localearn.models.trunk import Trunk
from localearn.recipes import Recipe
from localearn.registry import register_algorithm

from .learner import SupervisedLocal, paper_recipes

TAU = 0.5


def aux_depths(depth: int, modules: int) -> list[int]:
    """The auxiliary depth of each local module l = 0..modules-2."""
    span = max(modules - 2, 1)
    return [max(1, round(depth - (depth - 1) * TAU * i / span)) for i in range(modules - 1)]


def aux_picks(layer: int, depth: int, layers: int) -> list[int]:
    """The later layers whose copies make layer ``layer``'s auxiliary network (of ``layers`` in all)."""
    rest = layers - 1 - layer
    if depth >= rest:
        return list(range(layer + 1, layers))
    return [round(layer + j * rest / depth) for j in range(1, depth + 1)]


def fresh_copy(block: nn.Module) -> nn.Module:
    """A deep copy of ``block`` with every parameter re-drawn by its module's own initialiser."""
    twin = copy.deepcopy(block)
    with torch.no_grad():
        for m in twin.modules():
            reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
            if callable(reset):
                reset()
    return twin


def adapter(src: tuple[int, ...], dst: tuple[int, ...]) -> nn.Module:
    """Features of shape ``src`` to the shape ``dst`` a copied block takes."""
    if len(src) == len(dst) == 3:
        (c, h, w), (c2, h2, w2) = src, dst
        stride = h // h2 if h2 and w2 and h % h2 == 0 and w % w2 == 0 and h // h2 == w // w2 else 1
        mods: list[nn.Module] = [nn.Conv2d(c, c2, 1, stride=stride, bias=False), nn.BatchNorm2d(c2)]
        if (h // stride, w // stride) != (h2, w2):
            mods.append(nn.AdaptiveAvgPool2d((h2, w2)))
        return nn.Sequential(*mods)
    if (len(src) == len(dst) == 1) or (len(src) == len(dst) == 2 and src[0] == dst[0]):
        return nn.Linear(src[-1], dst[-1])
    raise ConfigError(f"auglocal cannot feed features of shape {src} to a copy of a block that takes {dst}")


@register_algorithm
class AugLocal(SupervisedLocal):
    """AugLocal (see the module docstring).

    Args:
        aug_depth: d, the auxiliary depth of the first block (blocks copied into its auxiliary network).
    """

    name = "auglocal"
    paper = ("Ma, Wu, Si & Tan, Scaling Supervised Local Learning with Augmented Auxiliary Networks, "
             "ICLR 2024")
    heads: ClassVar[dict[str, str]] = {"map": "pool_linear", "tokens": "mean", "vector": "linear"}
    recipes: ClassVar[dict[str, Recipe]] = paper_recipes(
        "AugLocal CIFAR: InfoPro's recipe at batch 128, SGD momentum 0.9, wd 1e-4, lr 0.1, cosine "
        "(docs/learners/auglocal.md#reference)", 1e-4)
    test_arch = "cnn:4-8-8"

    def __init__(self, *args: Any, aug_depth: int = 2, **base: Any) -> None:
        super().__init__(*args, **base)
        if not isinstance(aug_depth, int) or isinstance(aug_depth, bool) or aug_depth < 1:
            raise ConfigError(f"aug_depth must be a positive integer, got {aug_depth!r}")
        self.aug_depth = aug_depth
        self._depths: list[int] = []
        self.build()

    def auxiliary(self, k: int, trunk: Trunk) -> nn.Module:
        """Copies of the picked later blocks (adapted where shapes differ), then the head."""
        if k == len(trunk) - 1:  # the last block of an mlp:/cnn: trunk: a head alone
            return self.head_for(trunk.shapes[k])
        if not self._depths:
            self._depths = aux_depths(self.aug_depth, len(trunk))
        blocks, shapes = trunk.headless()
        inputs = [trunk.input_shape, *shapes[:-1]]
        layers: list[nn.Module] = []
        shape = trunk.shapes[k]
        for p in aux_picks(k, self._depths[k], len(trunk)):
            if shape != inputs[p]:
                layers.append(adapter(shape, inputs[p]))
            layers.append(fresh_copy(blocks[p]))
            shape = shapes[p]
        return nn.Sequential(*layers, self.head_for(shape))
