"""Backprop on the same architecture as the local learner it is compared with.

Rumelhart, Hinton & Williams, *Learning representations by back-propagating errors*, Nature 1986.

docs/learners/backprop.md#same-architecture: the BP arm is the learner's own trunk
(the same :func:`~localearn.arch.build_trunk` blocks and initialisation) without its local heads,
plus one ``Linear(D_L, C)`` head initialised N(0, 0.01) as in the reference, trained with one
global cross-entropy. It is registered as one more learner whose single "layer" is the whole
network, so that every comparison runs through the same trainer, meters and checkpoints.

Over a model (``--model SOURCE``, :func:`localearn.localize`) the one layer is the unmodified model
itself, trained end to end on the cross-entropy of its own logits (issue #19's backprop twin: the
same model, data, stopping rule and meters as the local learners cut it into blocks); the cut
settings of the spec are not used.

``task="autoencoder"`` (``localearn train --algo backprop --task autoencoder``) trains, end to end
on the reconstruction MSE, the forward network of Counter-Current Learning's autoencoder mode
(Kao & Hariharan, NeurIPS 2024, arXiv 2409.19841): the reference's conv autoencoder for a ``cnn:``
spec, its MLP stand-in for an ``mlp:`` spec, built by the same code with the same initialisation
(``init``) and activation, so a seed gives CCL's own forward maps. The released AE recipe's loss
warm-up, gradient centralisation and gradient clip are options here too (run by the Trainer's update
policy, :mod:`localearn.update`), so both arms of the autoencoder comparison are ordinary Trainer runs
with one recipe.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from localearn.arch import ArchSpec, build_trunk, flat_dim
from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner
from localearn.models.spec import ModelSpec
from localearn.models.trunk import whole_model
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm

TASKS = ("classification", "autoencoder")
AE_INITS = ("reference", "torch")


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

    def scores(self, h: Tensor, ctx: Context) -> Tensor:
        return h


class BackpropModel(LocalLayer):
    """An unmodified model as one layer: its own logits, global cross-entropy."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        return F.cross_entropy(h, ctx.y)

    def scores(self, h: Tensor, ctx: Context) -> Tensor:
        return h


class BackpropAutoencoder(LocalLayer):
    """CCL's autoencoder forward maps as one layer: reconstruction MSE to the input image."""

    def __init__(self, maps: list[nn.Module]) -> None:
        super().__init__()
        self.net = nn.Sequential(*maps)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        target = ctx["target"]
        return F.mse_loss(h.view_as(target), target)


def ccl_forward_maps(arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int, init: str) -> list[nn.Module]:
    """The forward maps f_1..f_L of CCL's autoencoder for ``arch``, made exactly as CCL makes them
    (feedback maps too, then dropped, so that one seed gives the same weights)."""
    from localearn.algorithms.counter_current.build import build_pairs  # only the AE task needs it

    if arch.kind not in ("mlp", "cnn"):
        raise ConfigError(f"the backprop autoencoder takes mlp: or cnn: specs, got {arch}")
    act = "relu" if arch.kind == "cnn" else "elu"  # CCL's act="auto" in autoencoder mode
    pairs, _ = build_pairs(arch, input_shape, num_classes, True, "auto", 1.0, 0.0, init, act)
    return [p.f for p in pairs if p.f is not None]


@register_algorithm
class Backprop(LocalLearner):
    """End-to-end backprop baseline (see the module docstring).

    Args:
        arch: the shared architecture spec (``mlp:2x1000``, ``cnn:32-128-512``).
        input_shape: one sample's shape.
        num_classes: C.
        schedule: only ``joint``.
        head_std: std of the head's N(0, std) initialisation (0.01, Beyond-BP).
        task: ``classification`` (default) or ``autoencoder`` (CCL's autoencoder network).
        init: the autoencoder's initialisation, ``reference`` (CCL's, the default) or ``torch``.
        grad_clip: clip the gradient norm of the whole network to this (0: off).
        warmup_steps: scale the loss by (step + 1) / warmup_steps for the first steps (0: off).
        grad_centralization: subtract the per-output-unit mean from weight gradients.
    """

    name = "backprop"
    aliases = ("bp",)
    paper = "Rumelhart, Hinton & Williams, Nature 1986 (same-architecture baseline)"
    schedules = ("joint",)
    takes_models: ClassVar[bool] = True  # trains a model end to end (--model, localearn.localize)
    block_local = False  # one global loss: the baseline, not a local learner
    coupling = "one global loss: the whole network is one layer trained end to end by backprop"
    pipeline_refusal = "its gradient crosses every layer, so no layer group trains on its own (use --parallel ddp)"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}
    # Beyond-BP's BP arm: AdamW, batch 128, lr / wd selected per dataset (original protocol,
    # MLP 2×1000 on MNIST / F-MNIST, 3×2000 on CIFAR); other datasets keep the AdamW default.
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("localearn default (AdamW as Beyond-BP, docs/reference/setups.md#architectures)",
                         optimizer="adamw",
                         lr=1e-3, weight_decay=0.0),
        "mnist": recipe("docs/reference/setups.md#hyperparameters (BP, MLP MNIST 2x1000, original)", lr=1.976e-4,
                        weight_decay=7.48e-6),
        "fashion_mnist": recipe("docs/reference/setups.md#hyperparameters (BP, MLP F-MNIST 2x1000, original)",
                                lr=2.132e-4, weight_decay=2.71e-5),
        "cifar10": recipe("docs/reference/setups.md#hyperparameters (BP, MLP CIFAR-10 3x2000, original)",
                          lr=8.116e-5, weight_decay=2.08e-5),
        "cifar100": recipe("docs/reference/setups.md#hyperparameters (BP, MLP CIFAR-100 3x2000, original)",
                           lr=1.036e-4, weight_decay=9.11e-6),
    }

    def __init__(
        self,
        *args: Any,
        head_std: float = 0.01,
        task: str | None = None,
        init: str = "reference",
        grad_clip: float = 0.0,
        warmup_steps: int = 0,
        grad_centralization: bool = False,
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
        task = task or "classification"
        if task not in TASKS:
            raise ConfigError(f"backprop trains task {' or '.join(TASKS)}, not {task!r}")
        if init not in AE_INITS:
            raise ConfigError(f"init must be one of {', '.join(AE_INITS)}, got {init!r}")
        for key, value in (("grad_clip", grad_clip), ("warmup_steps", warmup_steps)):
            if not value >= 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        self.task = task
        # The Trainer's update policy (localearn.update) runs the clip, the loss warm-up and centralisation.
        self.update_defaults = {"grad_clip": float(grad_clip), "loss_warmup_steps": int(warmup_steps),
                                "grad_centralization": bool(grad_centralization)}
        if isinstance(self.arch, ModelSpec):
            if task != "classification":
                raise ConfigError(f"backprop over a model trains classification, not the {task} task")
            self.add_layer(BackpropModel(whole_model(self.arch, self.input_shape, self.num_classes)))
        elif task == "autoencoder":
            self.add_layer(BackpropAutoencoder(ccl_forward_maps(self.arch, self.input_shape, self.num_classes, init)))
        else:
            blocks, shapes = build_trunk(self.arch, self.input_shape)
            self.add_layer(BackpropNetwork(blocks, flat_dim(shapes[-1]), self.num_classes, head_std))

    def make_context(self, batch: Any) -> Context:
        x, y = self.split_batch(batch)
        return Context(y=y, num_classes=self.num_classes, extras={"target": x} if self.task == "autoencoder" else {})

    def reconstruct(self, x: Tensor) -> Tensor:
        """The autoencoder's reconstruction of ``x``, shaped like ``x``."""
        if self.task != "autoencoder":
            raise ConfigError("reconstruct() needs task='autoencoder'; classifiers use predict(x)")
        return self.layers[0](x).view_as(x)

    def evaluate_batch(self, batch: Any, stage: Any = None) -> tuple[Tensor, Tensor]:
        """Autoencoder: the reconstruction and the input (the ``autoencoder`` task scores their MSE)."""
        if self.task == "autoencoder":
            x, _ = self.split_batch(batch)
            return self.reconstruct(x), x
        return super().evaluate_batch(batch, stage)
