"""The CaFo learner: frozen (random or DFA-trained) blocks, one independent predictor per block.

Equations, options and deviations: the package docstring (:mod:`localearn.algorithms.cafo`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from localearn.arch import flat_dim
from localearn.feature_cache import FeatureCache
from localearn.layer import Context
from localearn.learner import OptimizerFactory, Stage
from localearn.models.heads import make_head
from localearn.models.trunk import learner_trunk
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform

from .chain import CafoChain
from .layers import GRADIENT_LOSSES, PREDICTOR_LOSSES, CafoBlock, CafoPredictor, check, dfa_error, unit_norm_gaussian

BLOCK_MODES, AGGREGATES = ("rand", "dfa"), ("prob", "logits")


@register_algorithm
class CaFo(CafoChain):
    """Cascaded Forward (see the package docstring for every option)."""

    name = "cafo"
    aliases = ("cascaded_forward",)
    paper = (
        "Zhao, Wang, Li, Jin, Lang & Ling, The Cascaded Forward Algorithm for Neural Network "
        "Training, arXiv 2303.09728"
    )
    schedule = "greedy"
    schedules = ("greedy",)
    takes_models: ClassVar[bool] = True  # trains over a model's blocks (--model, localearn.localize)
    default_arch = "cnn:32-128-512"
    test_arch = "cnn:4-8"
    test_options: ClassVar[dict[str, Any]] = {"blocks": "dfa"}  # conformance runs the DFA phase
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("docs/learners/cafo.md#equations (Adam variant, as Beyond-BP)", {"lr": "localearn default"},
                         optimizer="adam", lr=1e-3, weight_decay=0.0),
        "mnist": recipe("docs/reference/setups.md#hyperparameters (CaFo-Rand, MNIST, original: pred_lr, pred_wd)",
                        lr=4.214e-4, weight_decay=1.66e-6),
        "fashion_mnist": recipe("docs/reference/setups.md#hyperparameters (CaFo-Rand, F-MNIST, original)", lr=1.374e-3,
                                weight_decay=2.94e-7),
        "cifar10": recipe("docs/reference/setups.md#hyperparameters (CaFo-Rand, CIFAR-10, original)", lr=2.411e-4,
                          weight_decay=6.36e-6),
        "cifar100": recipe("docs/reference/setups.md#hyperparameters (CaFo-Rand, CIFAR-100, original)", lr=2.411e-4,
                           weight_decay=6.36e-6),
    }

    dfa_epoch: Tensor

    # Beyond-BP's CaFo space (docs/reference/setups.md#search-spaces) widened to three decades; block lr/wd: DFA only.
    search: ClassVar[dict[str, Dist]] = {
        "weight_decay": log_uniform(1e-7, 1e-4), "block_lr": log_uniform(1e-6, 1e-3),
        "block_weight_decay": log_uniform(1e-7, 1e-4)}

    def __init__(
        self,
        *args: Any,
        blocks: str = "rand",
        predictor_loss: str = "ce",
        aggregate: str = "prob",
        lam: float = 0.0,
        fullbatch_lr: float = 0.01,
        block_lr: float = 3e-4,
        block_weight_decay: float | None = None,
        dfa_epochs: int | None = None,
        feedback_seed: int | None = None,
        cache_features: bool = True,
        cache_max_gb: float = 4.0,
        head: str | None = None,
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
        check(
            blocks in BLOCK_MODES, f"blocks must be one of {', '.join(BLOCK_MODES)}; got {blocks!r}"
        )
        check(
            predictor_loss in PREDICTOR_LOSSES,
            f"predictor_loss must be one of {', '.join(PREDICTOR_LOSSES)}; got {predictor_loss!r}",
        )
        check(
            aggregate in AGGREGATES,
            f"aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}",
        )
        check(math.isfinite(lam) and lam >= 0, f"lam must be a finite number >= 0; got {lam!r}")
        check(
            math.isfinite(fullbatch_lr) and fullbatch_lr > 0,
            f"fullbatch_lr must be > 0; got {fullbatch_lr!r}",
        )
        check(math.isfinite(block_lr) and block_lr > 0, f"block_lr must be > 0; got {block_lr!r}")
        check(
            block_weight_decay is None or block_weight_decay >= 0,
            f"block_weight_decay must be >= 0 or None; got {block_weight_decay!r}",
        )
        check(
            dfa_epochs is None or (isinstance(dfa_epochs, int) and dfa_epochs >= 1),
            f"dfa_epochs must be a positive integer or None; got {dfa_epochs!r}",
        )
        check(
            dfa_epochs is None or blocks == "dfa",
            "dfa_epochs needs blocks='dfa' (random blocks are never trained)",
        )
        check(cache_max_gb >= 0, f"cache_max_gb must be >= 0; got {cache_max_gb!r}")
        check(not self.arch.is_graph, f"cafo needs a cnn: or mlp: architecture, got {self.arch}")
        self.block_mode, self.predictor_loss, self.aggregate = blocks, predictor_loss, aggregate
        self.prediction_rule = "mean_prob" if aggregate == "prob" else "sum"
        if blocks == "dfa":  # CaFo-Rand pipelines (.chain)
            self.pipeline_refusal = "CaFo-DFA's blocks learn from the error at the output of the whole stack"
        if predictor_loss not in GRADIENT_LOSSES:  # closed-form / full-batch sums bypass train_step
            self.ddp_refusal = (f"predictor_loss={predictor_loss} accumulates its sums outside LocalLayer.train_step; "
                                "use predictor_loss=ce or sparsemax")
        self.block_lr, self.block_weight_decay, self.dfa_epochs = block_lr, block_weight_decay, dfa_epochs
        self.cache_features = bool(cache_features)

        trunk = learner_trunk(self.arch, self.input_shape, self.num_classes)
        bodies, shapes = trunk.headless()  # a model's own head is its last block's predictor
        kind = head or ("auto" if trunk.own_head else "linear")
        self.num_blocks = last = len(bodies)
        dims = [flat_dim(s) for s in shapes]
        for k, body in enumerate(bodies):
            block = cast(CafoBlock, self.add_layer(CafoBlock(body)))
            block.block_info = trunk.info(k, headless=True)
            if blocks == "rand":
                block.requires_grad_(False)  # CaFo-Rand: the random initialisation, never trained
            elif k == last - 1:
                block.head = nn.Linear(dims[k], self.num_classes) if kind == "linear" else \
                    make_head(kind, shapes[k], self.num_classes)
            else:
                seed = None if feedback_seed is None else feedback_seed + k
                block.feedback = unit_norm_gaussian(self.num_classes, dims[k], seed)
        for k in range(last):
            own = trunk.cut.head if trunk.cut is not None and k == last - 1 else None
            predictor = own or (None if kind == "linear" else make_head(kind, shapes[k], self.num_classes))
            self.add_layer(CafoPredictor(dims[k], self.num_classes, predictor_loss, lam, fullbatch_lr, predictor))
        self.register_buffer("dfa_epoch", torch.zeros((), dtype=torch.long))  # survives resume
        self.cache = FeatureCache(int(cache_max_gb * 2**30))
        self._train_cache_on = True
        self._unit: str | None = None  # the unit of the current epoch (make_context reads it)
        self._epoch_counts = [0, 0]  # training lookups and hits in the current epoch

    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        """DFA blocks: the factory's kind at ``block_lr``; gradient predictors: the factory."""
        if self.block_mode == "dfa":
            for block in self.blocks:
                opt = factory(block.parameters())  # block K's includes the auxiliary head
                for group in opt.param_groups:
                    group["lr"] = self.block_lr
                    if self.block_weight_decay is not None:
                        group["weight_decay"] = self.block_weight_decay
                block.optimizer = opt
        for pred in self.predictors:
            if pred.loss_name in GRADIENT_LOSSES:
                pred.optimizer = factory(pred.parameters())
        return self.optimizers()

    def stages(self) -> list[Stage]:
        """[``dfa`` (all blocks, if DFA)] + one ``predictor<k>`` unit per block."""
        units = [Stage("dfa", tuple(range(self.num_blocks)), self.dfa_epochs)] if self.block_mode == "dfa" else []
        one_pass = 1 if self.predictor_loss == "mse" else None  # solved in closed form in one pass
        units += [Stage(f"predictor{k}", (self.num_blocks + k,), one_pass) for k in range(self.num_blocks)]
        return units

    # ---------------------------------------------------------------------------- training
    def start_epoch(self, stage: Stage, epoch: int, epochs: int) -> None:
        """The Trainer's epoch-start hook: DFA epoch count and the augmentation check."""
        super().start_epoch(stage, epoch, epochs)
        self._unit = stage.name  # what make_context builds (the DFA error in the dfa unit)
        if stage.name == "dfa":
            self.dfa_epoch += 1
        lookups, hits = self._epoch_counts
        if epoch == 1:
            self._train_cache_on = True
        elif epoch >= 3 and self._train_cache_on and lookups and hits < 0.5 * lookups:
            self._train_cache_on = False  # rows never repeat: augmented data, caching is useless
            self.cache.clear()
        self._epoch_counts = [0, 0]

    def make_context(self, batch: Any) -> Context:
        """Labels; in the DFA unit also ``dfa_error``, the error each block's feedback maps.

        ``e = (softmax(o) − Y) / B`` (the per-sample error of the batch-mean CE) comes from one
        no-grad pass through the blocks and the auxiliary head at the current weights, with
        BatchNorm in the unit's train mode; the pass's running-statistics updates are undone, so
        BN statistics move once per step, in the blocks' own forward (Nøkland 2016; docs/learners/cafo.md#equations)."""
        ctx = super().make_context(batch)
        if self._unit != "dfa":
            return ctx
        x, y = self.split_batch(batch)
        ctx.extras["dfa_error"] = dfa_error(self.blocks, x, y, self.num_classes)
        return ctx

