"""``LocalLayer``: one unit of computation with its own objective and its own optimizer.

The single rule of the library lives in :meth:`LocalLayer.train_step`: the input is detached,
so no gradient crosses a layer boundary, and the layer's own optimizer steps on its own loss
under the run's :class:`~localearn.update.UpdatePolicy` (precision, warm-up, clipping, schedule).
Subclasses implement :meth:`forward` and :meth:`local_loss`, and :meth:`scores` where the layer
has class scores of its own; a layer with a fused kernel declares ``fused_op`` and implements
:meth:`fused_forward_loss`. They never override ``train_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from localearn import kernels
from localearn.measure.memory import layer_scope
from localearn.update import PLAIN, UpdatePolicy


@dataclass
class Context:
    """What a learner prepared for its layers on one batch.

    Attributes:
        y: integer class labels ``(B,)`` (or None for unsupervised steps and inference).
        num_classes: C.
        extras: learner-specific values (negatives, noise level, feedback prototypes, the graph's
            ``edge_index`` and node masks for graph learners). Only tensors and plain scalars can
            cross a pipeline link.
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
        update: the run's update policy (set by the Trainer; plain fp32 steps otherwise).
        layer_name: a stable name used in per-layer reports (``layer0``, ``layer1``, ...).
        fused_op: the name of this layer's fused kernel in :data:`localearn.kernels.FUSED_OPS`
            (None: none); ``kernel_impl``/``kernel_compile`` hold the run's kernel options and
            ``kernel_used`` what the last step ran (reported per layer in run.json).
    """

    optimizer: torch.optim.Optimizer | None
    layer_name: str
    fused_op: ClassVar[str | None] = None
    kernel_impl: str = "auto"
    kernel_compile: bool = False
    kernel_used: str | None = None
    # Set by data-parallel training (localearn.distributed.ddp): averages this layer's gradient
    # across ranks between its backward and its step. None in one process.
    grad_sync: Callable[[nn.Module], None] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.optimizer = None
        self.update: UpdatePolicy = PLAIN
        self.layer_name = type(self).__name__

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The inference map; its output is what the next layer consumes."""
        raise NotImplementedError

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:  # pragma: no cover - abstract
        """A scalar computed from this layer's own output ``h``."""
        raise NotImplementedError

    def scores(self, h: Any, ctx: Context) -> Tensor | None:
        """This layer's own class scores ``(B, C)`` from its output ``h`` (its vote in the
        learner's prediction rule and its per-layer accuracy); None: the layer has none."""
        return None

    def infer(self, x: Tensor, ctx: Context) -> Tensor:
        """The forward map given the step's context; a layer whose forward needs more than ``x``
        (a graph layer's edges) reads it from ``ctx`` here. Used for frozen layers, evaluation and
        by :meth:`forward_loss`."""
        return self(x)

    def fused_weight(self) -> Tensor | None:
        """The weight whose shape decides the fused op's implementation; None: this instance
        cannot use the op (e.g. a user block in place of the linear map)."""
        return None

    def fused_forward_loss(self, op: Callable[..., Any], x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Forward and local loss through ``op``, the implementation of :attr:`fused_op` chosen
        for this step (:func:`localearn.kernels.dispatch`)."""
        raise NotImplementedError(f"{type(self).__name__} declares fused_op but no fused_forward_loss")

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Forward and local loss together: the layer's fused op where it declares one and can
        use it here, else :meth:`infer` then :meth:`local_loss`."""
        op = kernels.dispatch(self, x)
        if op is not None:
            return self.fused_forward_loss(op, x, ctx)
        h = self.infer(x, ctx)
        return h, self.local_loss(h, ctx)

    @final
    def train_step(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """One local update on ``x``: detach, forward + loss (autocast at the run's precision),
        then backward and this layer's own optimizer step under :attr:`update`.

        Gradients are cleared (set to None) before *and* after the step, so between steps no
        layer holds a ``.grad``: that both frees memory early and makes the no-crossing invariant
        checkable (at the moment this layer steps, only its own parameters have gradients).

        Returns:
            The detached output and the detached loss (a device tensor: nothing is read on the host).
        """
        if self.optimizer is None:
            raise RuntimeError(
                f"{self.layer_name} has no optimizer; call learner.configure_optimizers(factory)"
            )
        x = x.detach()
        self.optimizer.zero_grad(set_to_none=True)
        with layer_scope(self.layer_name):
            with self.update.autocast(x.device):
                h, loss = self.forward_loss(x, ctx)
            self.update.apply(self, loss.float())
        return h.detach(), loss.detach().float()
