"""The shared skeleton of DGL, InfoPro and AugLocal: K consecutive blocks, each with its own loss.

Notes on the three codebases (``docs/learners/dgl.md#skeleton`` docs/learners/index.md#notation): modules 1..K-1 each
train an auxiliary network on their own output and module K trains the network's classifier; module
k+1 receives ``h_k.detach()``. One optimizer per module stepping right after its backward (DGL) and
one SGD over everything stepped once per batch (InfoPro, AugLocal) give the same update, since
module k+1's input is computed before module k steps; localearn's per-layer ``train_step`` is both.

Blocks come from :func:`localearn.models.trunk.learner_trunk`: an ``mlp:``/``cnn:`` spec, a user's
``from_modules`` blocks, or a model cut into blocks (``--model``), whose last block ends in the
model's own head and keeps it (no auxiliary network on top of its logits). Auxiliary heads come from
:func:`localearn.models.make_head` by the shape of each block's output: ``--opt head=KIND`` for
every block, else the learner's own choice per feature kind (:attr:`SupervisedLocal.heads`).

Schedules: ``joint`` (decoupled DGL: every block steps on every batch, the papers' default) and
``greedy`` (sequential DGL: block k trains to its own stopping point, then is frozen in eval mode,
so its BatchNorm statistics stop moving, as DGL's ``cifar_sequential_greedy.py`` does). Prediction:
the last block's scores (the model's classifier), as all three papers infer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from localearn.errors import ConfigError
from localearn.learner import LocalLearner
from localearn.models.heads import Decoder, feature_kind, make_head
from localearn.models.trunk import Trunk, learner_trunk
from localearn.recipes import Recipe, recipe

from .layers import SupervisedBlock


def paper_recipes(source: str, weight_decay: float) -> dict[str, Recipe]:
    """The learners' own recipe on full CIFAR-10/100 (batch 128; a cosine schedule stands in for DGL's
    steps of x0.2 every 15 epochs), beside the shared Adam recipe for other image data."""
    paper = recipe(source, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=weight_decay, lr_schedule="cosine")
    return {**SupervisedLocal.recipes, "cifar10": paper, "cifar100": paper}


class SupervisedLocal(LocalLearner):
    """Blocks with auxiliary networks (see the module docstring); subclasses choose the auxiliary
    network (:meth:`auxiliary`), the decoder (:meth:`decoder`) and the loss weights (:meth:`weights`),
    and call :meth:`build` at the end of their constructor.

    Args:
        head: the auxiliary head kind for every block (:data:`localearn.models.HEAD_KINDS`); None: the
            learner's choice per feature kind.
    """

    schedule = "joint"
    schedules = ("joint", "greedy")
    default_arch = "cnn:32-64-128"
    test_arch = "mlp:2x32"
    takes_models: ClassVar[bool] = True  # trains over a model's blocks (--model, localearn.localize)
    heads: ClassVar[dict[str, str]] = {"map": "pool_linear", "tokens": "mean", "vector": "linear"}
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    # The papers train with SGD (momentum 0.9, lr 0.1, wd 5e-4 or 1e-4) over 50-400 epochs with step or
    # cosine decay (docs/learners/dgl.md#skeleton), kept for full CIFAR (paper_recipes). On a short run that recipe
    # trails: DGL over a ResNet-18 cut into 4 blocks, cifar10_subset, 3 epochs, batch 64, seed 0: test accuracy
    # 0.241 at SGD lr 0.1, 0.373 at lr 0.01, 0.415 with Adam at 1e-3 (pool + linear heads: 0.413), backprop on
    # the same model 0.443; so other image data take Adam at 1e-3.
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("localearn default: the backprop twin's Adam at 1e-3, wd 0, so that the arms differ in the "
                         "learning rule alone (benchmarks/results/any_network_2026-12-02)",
                         optimizer="adam", lr=1e-3, weight_decay=0.0),
    }

    def __init__(self, *args: Any, head: str | None = None, **base: Any) -> None:
        super().__init__(*args, **base)
        if self.arch.is_graph:
            raise ConfigError(f"{self.name} trains image or vector inputs, not the graph spec {self.arch}")
        self.head_kind = head

    def build(self) -> None:
        """Add one :class:`SupervisedBlock` per block of the trunk."""
        trunk = learner_trunk(self.arch, self.input_shape, self.num_classes)
        for k, block in enumerate(trunk.blocks):
            last = k == len(trunk) - 1
            aux = None if last and trunk.own_head else self.auxiliary(k, trunk)
            task, rec = (1.0, 0.0) if last else self.weights(k, len(trunk))
            decoder = self.decoder(k, trunk) if rec else None
            layer = SupervisedBlock(block, aux, decoder, task, rec)
            layer.block_info = trunk.info(k)
            self.add_layer(layer)

    def head_for(self, shape: tuple[int, ...]) -> nn.Module:
        """An auxiliary head for features of ``shape``: ``head`` or the learner's kind for the shape."""
        return make_head(self.head_kind or self.heads[feature_kind(shape)], shape, self.num_classes)

    def auxiliary(self, k: int, trunk: Trunk) -> nn.Module:
        """Block k's auxiliary network: a head on its output (AugLocal: copies of later blocks first)."""
        return self.head_for(trunk.shapes[k])

    def decoder(self, k: int, trunk: Trunk) -> Decoder | None:
        """Block k's reconstruction decoder, where its weight is non-zero (InfoPro)."""
        return None

    def weights(self, k: int, modules: int) -> tuple[float, float]:
        """Block k's (task, reconstruction) loss weights, k < ``modules`` - 1."""
        return 1.0, 0.0
