"""``LocalLayer``: one unit of computation with its own objective and its own optimizer.

The single rule of the library lives in :meth:`LocalLayer.train_step`: the input is detached,
so no gradient crosses a layer boundary, and the layer's own optimizer steps on its own loss.
Subclasses implement :meth:`forward` and :meth:`local_loss` (or override :meth:`forward_loss` to
call a fused kernel); they never override ``train_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

import torch
from torch import Tensor, nn

from localearn.measure.memory import layer_scope


@dataclass
class Context:
    """What a learner prepared for its layers on one batch.

    Attributes:
        y: integer class labels ``(B,)`` (or None for unsupervised steps).
        num_classes: C.
        extras: learner-specific values (negatives, noise level, feedback prototypes, the graph's
            ``edge_index`` and node masks for graph learners).
        inputs: the first layer's input when the learner builds it from the batch (FF's
            positive and negative rows, ForwardGNN's graph with virtual nodes); None: the batch's
            inputs as they are.
    """

    y: Tensor | None
    num_classes: int
    extras: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None

    def __getitem__(self, key: str) -> Any:
        return self.extras[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.extras.get(key, default)


class LocalLayer(nn.Module):
    """A layer trained by its own local loss.

    Attributes:
        optimizer: set by the learner from the trainer's optimizer factory.
        layer_name: a stable name used in per-layer reports (``layer0``, ``layer1``, ...).
    """

    optimizer: torch.optim.Optimizer | None
    layer_name: str
    # Set by data-parallel training (localearn.distributed.ddp): averages this layer's gradient
    # across ranks between its backward and its step. None in one process.
    grad_sync: Callable[[nn.Module], None] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.optimizer = None
        self.layer_name = type(self).__name__

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The inference map; its output is what the next layer consumes."""
        raise NotImplementedError

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:  # pragma: no cover - abstract
        """A scalar computed from this layer's own output ``h``."""
        raise NotImplementedError

    def infer(self, x: Tensor, ctx: Context) -> Tensor:
        """The forward map given the step's context; a layer whose forward needs more than ``x``
        (a graph layer's edges) reads it from ``ctx`` here. Used by the learner's chain for frozen
        layers and by :meth:`forward_loss`."""
        return self(x)

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Forward and local loss together; override only to call a fused kernel."""
        h = self.infer(x, ctx)
        return h, self.local_loss(h, ctx)

    @final
    def train_step(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """One local update on ``x``: detach, forward + loss, backward, own optimizer step.

        Gradients are cleared (set to None) before *and* after the step, so between steps no
        layer holds a ``.grad``: that both frees memory early and makes the no-crossing invariant
        checkable (at the moment this layer steps, only its own parameters have gradients).

        Returns:
            The detached output and the detached loss.
        """
        if self.optimizer is None:
            raise RuntimeError(
                f"{self.layer_name} has no optimizer; call learner.configure_optimizers(factory)"
            )
        x = x.detach()
        self.optimizer.zero_grad(set_to_none=True)
        with layer_scope(self.layer_name):
            h, loss = self.forward_loss(x, ctx)
            loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return h.detach(), loss.detach()
