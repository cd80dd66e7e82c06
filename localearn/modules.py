"""Your own modules: a list of ``nn.Module`` blocks as a learner's trunk, without subclassing.

``MonoForward.from_modules([block1, block2], input_shape=(1, 8, 8), num_classes=10)`` builds the
learner over your blocks, one local layer per block: the learner adds its own heads (Mono-Forward's
projection ``M_i``, CaFo's predictors, Forward-Forward's goodness) and the Trainer trains each
block from its own loss. The blocks stand in for the architecture spec through
:class:`ModulesSpec`, which :func:`localearn.arch.build_trunk` returns as they are; shapes are
found by one forward pass of a dummy batch. ``run.json`` names the blocks (``modules:...``); such
a run is re-created from your code, not from the spec string. To cut a whole model into blocks
whose last one keeps the model's own head, use :func:`localearn.localize` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from localearn.arch import ArchSpec
from localearn.errors import ConfigError

if TYPE_CHECKING:
    from localearn.learner import LocalLearner

L = TypeVar("L", bound="LocalLearner")
SUPPORTED = "from_modules works with mono_forward, forward_forward, cafo, backprop, dgl, infopro and auglocal"


@dataclass(frozen=True)
class ModulesSpec(ArchSpec):
    """An architecture made of user blocks; ``widths`` are each block's flattened output width."""

    blocks: tuple[nn.Module, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = field(default=())
    input_shape: tuple[int, ...] = ()


def modules_spec(blocks: Sequence[nn.Module], input_shape: Sequence[int]) -> ModulesSpec:
    """Check the blocks chain on ``input_shape`` and record each block's output shape."""
    blocks = tuple(blocks)
    if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
        raise ConfigError("from_modules needs a non-empty list of torch.nn.Module blocks")
    shape = tuple(int(s) for s in input_shape)
    shapes: list[tuple[int, ...]] = []
    h = torch.zeros(2, *shape)
    modes = [b.training for b in blocks]
    with torch.no_grad():
        for i, block in enumerate(blocks):
            block.eval()  # BatchNorm and dropout untouched by the shape probe
            try:
                h = block(h)
            except Exception as exc:
                raise ConfigError(f"from_modules: block {i} ({type(block).__name__}) fails on input of "
                                  f"shape {tuple(h.shape[1:])}: {exc}") from exc
            shapes.append(tuple(h.shape[1:]))
    for block, mode in zip(blocks, modes, strict=True):
        block.train(mode)
    widths = tuple(int(torch.Size(s).numel()) for s in shapes)
    raw = "modules:" + "-".join(type(b).__name__ for b in blocks)
    return ModulesSpec(kind="modules", widths=widths, raw=raw, blocks=blocks, shapes=tuple(shapes),
                       input_shape=shape)


def build_from_modules(cls: type[L], blocks: Sequence[nn.Module], input_shape: Sequence[int],
                       num_classes: int, **options: Any) -> L:
    """``cls`` built over ``blocks`` (see the module docstring); options go to its constructor."""
    if "arch" in options:
        raise ConfigError("from_modules takes blocks instead of an arch spec; drop arch=")
    spec = modules_spec(blocks, input_shape)
    try:
        learner = cls(arch=spec, input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except ConfigError as exc:
        if spec.raw not in str(exc):  # a bad option, not the blocks
            raise
        raise ConfigError(f"{cls.name} does not take from_modules blocks ({exc}); {SUPPORTED}") from exc
    owned = {id(m) for m in learner.modules()}
    if not all(id(b) in owned for b in spec.blocks):
        raise ConfigError(f"{cls.name} builds its own layers and does not take from_modules blocks; {SUPPORTED}")
    return learner
