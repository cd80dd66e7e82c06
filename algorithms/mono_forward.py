"""Mono-Forward: every layer learns from its own projection to class scores.

Gong, Li & Abdulla, *Mono-Forward: Backpropagation-Free Algorithm for Efficient Neural Network
Training Harnessing Local Errors*, arXiv 2501.09238 (v2: *Revisiting Forward-Forward through
Objective-Locality Decomposition*). Equations and settings: docs/learners/mono_forward.md.

Layer i computes ``a_i = ReLU(W_i sg(a_{i-1}) + b_i)`` and the goodness matrix
``G_i = a_i M_iᵀ`` (B × C); its loss is ``CE(G_i, y)``, which updates only W_i, b_i and M_i.

Schedules: ``greedy`` (the Beyond-BP reference: stage i trains (W_i, M_i) to its own stopping
point over the frozen, no-grad-recomputed prefix, and is restored to its best epoch before being
frozen) and ``joint`` (every layer steps on every batch, as in FF; equally local).

Prediction: ``last`` (default, argmax G_L) or ``sum`` (argmax Σ_i G_i). The optional raw-input
head M_0 (``input_head=True``, off by default as in the original runs) adds a stage that is
counted in passes and cost but unused at inference.

Initialisation: W_i Kaiming-uniform for ReLU and b_i = 0; M_i with the ``nn.Linear`` default
bound 1/√fan_in (Beyond-BP). For ``cnn:`` specs each block is the shared conv block
(conv3×3 → ReLU → maxpool → BN) rather than the paper's conv → ReLU → AvgPool [U]; this keeps the
backprop twin identical and is a documented deviation.

Any network (issue #19): over a model's blocks (``--model``, :func:`localearn.localize`) the
projection of block i is a head chosen by the shape of its features (``head``: ``auto`` by default,
pooling + linear on feature maps, so a 64×32×32 map is not flattened into a 655k-parameter
projection), and the last block keeps the model's own head: its output is ``G_L``, with no
projection on top of the model's logits. ``head=linear`` is the paper's projection on any trunk,
the default for ``mlp:``/``cnn:`` specs and ``from_modules`` blocks.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch.nn.functional as F
from torch import Tensor, nn

from localearn import kernels
from localearn.arch import flat_dim
from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner, Stage
from localearn.models.heads import make_head
from localearn.models.trunk import learner_trunk
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm


def projection(kind: str, shape: tuple[int, ...], num_classes: int) -> nn.Module | None:
    """The projection M_i for features of ``shape``: None for the paper's (``linear``), else a head by shape."""
    return None if kind == "linear" else make_head(kind, shape, num_classes)


class MonoForwardLayer(LocalLayer):
    """A trunk block plus its projection ``M_i`` (C × D_i, no bias) and CE on ``G_i``.

    An MLP block (``[Flatten →] Linear → ReLU``) steps through the fused op ``mono_forward_layer``
    (:attr:`fused_op`; the trainer's ``kernels``/``compile`` options choose its implementation); a
    conv block, a user block or the raw-input head ends in the projection-head op
    ``linear_cross_entropy``. A ``head`` module (a head by feature shape, or ``nn.Identity`` for a
    block that ends in the model's own head) replaces the projection: ``G_i = head(a_i)``.
    """

    fused_op = "mono_forward_layer"

    def __init__(self, body: nn.Module, feat_dim: int, num_classes: int, head: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.paper_head = head is None
        # the paper's M_i (default init: U(±1/√fan_in)), or the given head
        self.proj: nn.Module = nn.Linear(feat_dim, num_classes, bias=False) if head is None else head
        parts = [m for m in body.children() if not isinstance(m, nn.Flatten)]
        self.fused = (self.paper_head and isinstance(body, nn.Sequential) and len(parts) == 2
                      and isinstance(parts[0], nn.Linear) and isinstance(parts[1], nn.ReLU))
        self.block_info: dict[str, Any] = {}

    @property
    def linear(self) -> nn.Linear | None:
        """The block's Linear when the block is ``[Flatten →] Linear → ReLU`` (fusable), else None."""
        if not self.fused:
            return None
        return cast(nn.Linear, next(m for m in self.body.children() if isinstance(m, nn.Linear)))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def goodness(self, h: Tensor) -> Tensor:
        """``G_i = a_i M_iᵀ`` (or the given head's output), the layer's class scores."""
        return cast(Tensor, self.proj(h.flatten(1) if self.paper_head else h))

    def scores(self, h: Tensor, ctx: Context) -> Tensor:
        return self.goodness(h)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        if not self.paper_head:
            return F.cross_entropy(self.goodness(h), ctx.y)
        flat, w = h.flatten(1), cast(nn.Linear, self.proj).weight
        op = kernels.implementation("linear_cross_entropy", kernels.choose(self, "linear_cross_entropy", flat, w))
        return cast(Tensor, op(flat, w, ctx.y))

    def fused_weight(self) -> Tensor | None:
        linear = self.linear
        return None if linear is None else linear.weight

    def fused_forward_loss(self, op: Callable[..., Any], x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        linear = cast(nn.Linear, self.linear)
        proj = cast(nn.Linear, self.proj)
        return cast(tuple[Tensor, Tensor], op(x, linear.weight, linear.bias, proj.weight, ctx.y))


@register_algorithm
class MonoForward(LocalLearner):
    """Mono-Forward (see the module docstring).

    Args:
        arch: ``mlp:...`` or ``cnn:...`` spec.
        input_shape: one sample's shape.
        num_classes: C.
        schedule: ``greedy`` (sequential stages, the reference; default) or ``joint``.
        prediction: ``last`` (argmax G_L, default) or ``sum`` (argmax Σ_i G_i).
        input_head: add the raw-input stage M_0 (trained, counted, unused at inference).
        head: the projection's kind (:data:`localearn.models.HEAD_KINDS`; ``linear`` is the paper's
            bias-free M_i); None: ``linear`` on ``mlp:``/``cnn:`` specs, ``auto`` on a model's blocks.
    """

    name = "mono_forward"
    aliases = ("mf",)
    paper = "Gong, Li & Abdulla, Mono-Forward, arXiv 2501.09238"
    schedule = "greedy"
    schedules = ("greedy", "joint")
    takes_models: ClassVar[bool] = True  # trains over a model's blocks (--model, localearn.localize)
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    # Beyond-BP (original protocol): Adam, wd 0, batch 128, lr per dataset. Its per-layer caps of
    # 8-15 epochs under-trained MF (docs/learners/mono_forward.md#pitfall-stopping-rule); the cap and
    # patience are Rule 1's.
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("docs/learners/mono_forward.md#reference (Beyond-BP: Adam, wd 0, batch 128)",
                         optimizer="adam", lr=1e-3, weight_decay=0.0, sources={"lr": "localearn default"}),
        "mnist": recipe("docs/reference/setups.md#hyperparameters (MF, MNIST, original)", lr=1.570e-3),
        "fashion_mnist": recipe("docs/reference/setups.md#hyperparameters (MF, F-MNIST, original)", lr=3.873e-4),
        "cifar10": recipe("docs/reference/setups.md#hyperparameters (MF, CIFAR-10, original)", lr=3.242e-4),
        "cifar100": recipe("docs/reference/setups.md#hyperparameters (MF, CIFAR-100, original)", lr=1.728e-4),
    }

    def __init__(self, *args: Any, prediction: str = "last", input_head: bool = False, head: str | None = None,
                 **base: Any) -> None:
        super().__init__(*args, **base)
        if prediction not in ("last", "sum"):
            raise ConfigError(f"prediction must be 'last' or 'sum', got {prediction!r}")
        self.prediction = prediction
        self.input_head = bool(input_head)
        trunk = learner_trunk(self.arch, self.input_shape, self.num_classes)
        kind = head or ("auto" if trunk.own_head else "linear")
        if self.input_head:
            self.add_layer(MonoForwardLayer(nn.Identity(), flat_dim(self.input_shape), self.num_classes,
                                            projection(kind, self.input_shape, self.num_classes)))
        for k, (block, shape) in enumerate(zip(trunk.blocks, trunk.shapes, strict=True)):
            own = trunk.own_head and k == len(trunk) - 1  # the model's logits are G_L
            layer = MonoForwardLayer(block, flat_dim(shape), self.num_classes,
                                     nn.Identity() if own else projection(kind, shape, self.num_classes))
            layer.block_info = trunk.info(k)
            self.add_layer(layer)

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """A greedy unit: its layer's ``G_i``; else ``G_L`` (``last``) or every trunk layer's ``G_i``
        summed (``sum``). The raw-input head never votes (its position has scores, reported per layer)."""
        if stage is not None and len(stage.layers) == 1:
            return stage.layers
        n = len(self.layers)
        return (n - 1,) if self.prediction == "last" else tuple(range(int(self.input_head), n))
