"""A learner's trunk from its architecture: the blocks it trains, built from a spec or cut from a model.

Supervised local learning over a network's own modules (DGL, Belilovsky et al., ICML 2020; InfoPro,
Wang et al., ICLR 2021): modules 1..K-1 get auxiliary heads and the last one keeps the network's own
classifier. :func:`learner_trunk` gives a learner that choice: for ``mlp:``/``cnn:`` specs and
``from_modules`` blocks (:func:`localearn.arch.build_trunk`) every block needs a head; for a
``model:`` spec (:mod:`localearn.models.spec`) the model is built (or taken, for a model object),
cut (:func:`~localearn.models.cut.cut_model`), and its last block ends in the model's own head
(``own_head``), which a learner uses as that block's head instead of adding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from localearn.arch import ArchSpec, build_trunk
from localearn.models.cut import Cut, cut_model
from localearn.models.sources import check_model, load_model
from localearn.models.spec import ModelSpec


@dataclass
class Trunk:
    """The blocks a learner trains, in order.

    Attributes:
        blocks: the modules; ``blocks[k]`` takes ``blocks[k-1]``'s output.
        shapes: each block's output shape (one sample).
        input_shape: the first block's input shape.
        own_head: ``blocks[-1]`` ends in the model's own classifier (its output is the class scores).
        cut: the cut a model's blocks come from (``own_head``): ``cut.head`` and ``cut.last_trunk``
            split the last block into the head and what comes before it.
    """

    blocks: list[nn.Module]
    shapes: list[tuple[int, ...]]
    input_shape: tuple[int, ...]
    own_head: bool = False
    cut: Cut | None = None

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def inputs(self) -> list[tuple[int, ...]]:
        """Each block's input shape."""
        return [self.input_shape, *self.shapes[:-1]]

    def headless(self) -> tuple[list[nn.Module], list[tuple[int, ...]]]:
        """The blocks and shapes with the last block's own head left off (``cut.last_trunk``)."""
        if self.cut is None:
            return list(self.blocks), list(self.shapes)
        return [*self.blocks[:-1], self.cut.last_trunk], [*self.shapes[:-1], self.cut.head_shape]

    def info(self, k: int, headless: bool = False) -> dict[str, Any]:
        """What run.json says about block ``k`` (of :meth:`headless` blocks if ``headless``): the model's
        modules it covers and its output shape."""
        if self.cut is None:
            return {}
        names, shape = self.cut.names[k], self.shapes[k]
        if headless and k == len(self) - 1:
            head = {name for name, _ in self.cut.head.named_children()}
            names, shape = tuple(n for n in names if n not in head), self.cut.head_shape
        return {"modules": ", ".join(names) or "-", "output_shape": list(shape)}


def learner_trunk(arch: ArchSpec, input_shape: Sequence[int], num_classes: int) -> Trunk:
    """The trunk of ``arch`` for inputs of ``input_shape`` and ``num_classes`` classes."""
    shape = tuple(int(s) for s in input_shape)
    if not isinstance(arch, ModelSpec):
        blocks, shapes = build_trunk(arch, shape)
        return Trunk(list(blocks), [tuple(s) for s in shapes], shape)
    cut = cut_model(whole_model(arch, shape, num_classes), arch.blocks if isinstance(arch.blocks, int)
                    else list(arch.blocks), shape, arch.balance)
    return Trunk(list(cut.blocks), list(cut.shapes), shape, own_head=True, cut=cut)


def whole_model(arch: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model of ``arch``: built from its source (random weights, the global RNG's draws), or the
    object given to ``localize``, checked to give ``num_classes`` scores."""
    shape = tuple(int(s) for s in input_shape)
    if arch.module is None:
        return load_model(arch.source, num_classes, shape, arch.model_options)
    check_model(arch.module, arch.source, num_classes, shape)
    return arch.module
