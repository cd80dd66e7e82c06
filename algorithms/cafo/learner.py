"""The CaFo learner: frozen (random or DFA-trained) blocks, one independent predictor per block.

Equations, options and deviations: the package docstring (:mod:`localearn.algorithms.cafo`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from itertools import chain
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from localearn.arch import ArchSpec, build_trunk, flat_dim
from localearn.feature_cache import FeatureCache
from localearn.layer import Context
from localearn.learner import OptimizerFactory, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm

from .layers import GRADIENT_LOSSES, PREDICTOR_LOSSES, CafoBlock, CafoPredictor, check, dfa_error, unit_norm_gaussian
from .pipeline import CafoPipelined

BLOCK_MODES, AGGREGATES = ("rand", "dfa"), ("prob", "logits")


@register_algorithm
class CaFo(CafoPipelined):
    """Cascaded Forward (see the package docstring for every option)."""

    name = "cafo"
    aliases = ("cascaded_forward",)
    paper = (
        "Zhao, Wang, Li, Jin, Lang & Ling, The Cascaded Forward Algorithm for Neural Network "
        "Training, arXiv 2303.09728"
    )
    schedule = "greedy"
    schedules = ("greedy",)
    default_arch = "cnn:32-128-512"
    test_arch = "cnn:4-8"
    test_options: ClassVar[dict[str, Any]] = {"blocks": "dfa"}  # conformance runs the DFA phase
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("ALGORITHMS.md §3.1 (Adam variant, as Beyond-BP)", {"lr": "localearn default"},
                         optimizer="adam", lr=1e-3, weight_decay=0.0),
        "mnist": recipe("STUDY_PROTOCOL.md §7.4 (CaFo-Rand, MNIST, original: pred_lr, pred_wd)",
                        lr=4.214e-4, weight_decay=1.66e-6),
        "fashion_mnist": recipe("STUDY_PROTOCOL.md §7.4 (CaFo-Rand, F-MNIST, original)", lr=1.374e-3,
                                weight_decay=2.94e-7),
        "cifar10": recipe("STUDY_PROTOCOL.md §7.4 (CaFo-Rand, CIFAR-10, original)", lr=2.411e-4,
                          weight_decay=6.36e-6),
        "cifar100": recipe("STUDY_PROTOCOL.md §7.4 (CaFo-Rand, CIFAR-100, original)", lr=2.411e-4,
                           weight_decay=6.36e-6),
    }

    dfa_epoch: Tensor

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Beyond-BP's CaFo space (STUDY_PROTOCOL §7.3) widened to three decades; block lr/wd: DFA only."""
        return {"lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
                "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
                "block_lr": trial.suggest_float("block_lr", 1e-6, 1e-3, log=True),
                "block_weight_decay": trial.suggest_float("block_weight_decay", 1e-7, 1e-4, log=True)}

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        schedule: str | None = None,
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
    ) -> None:
        super().__init__(arch, input_shape, num_classes, schedule)
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
        if blocks == "dfa":  # CaFo-Rand pipelines (.pipeline)
            self.pipeline_refusal = "CaFo-DFA's blocks learn from the error at the output of the whole stack"
        if predictor_loss not in GRADIENT_LOSSES:  # closed-form / full-batch sums bypass train_step
            self.ddp_refusal = (f"predictor_loss={predictor_loss} accumulates its sums outside LocalLayer.train_step; "
                                "use predictor_loss=ce or sparsemax")
        self.block_lr, self.block_weight_decay, self.dfa_epochs = block_lr, block_weight_decay, dfa_epochs
        self.cache_features = bool(cache_features)

        bodies, shapes = build_trunk(self.arch, self.input_shape)
        self.num_blocks = len(bodies)
        dims = [flat_dim(s) for s in shapes]
        for k, body in enumerate(bodies):
            block = cast(CafoBlock, self.add_layer(CafoBlock(body)))
            if blocks == "rand":
                block.requires_grad_(False)  # CaFo-Rand: the random initialisation, never trained
            elif k == self.num_blocks - 1:
                block.head = nn.Linear(dims[k], self.num_classes)
            else:
                seed = None if feedback_seed is None else feedback_seed + k
                block.feedback = unit_norm_gaussian(self.num_classes, dims[k], seed)
        for k in range(self.num_blocks):
            self.add_layer(
                CafoPredictor(dims[k], self.num_classes, predictor_loss, lam, fullbatch_lr)
            )
        self.register_buffer("dfa_epoch", torch.zeros((), dtype=torch.long))  # survives resume
        self.cache = FeatureCache(int(cache_max_gb * 2**30))
        self._train_cache_on = True
        self._unit: str | None = None  # the unit of the current train_step (make_context reads it)
        self._epoch_counts = [0, 0]  # training lookups and hits in the current epoch
        self._dfa_last_loss = float("nan")

    # ------------------------------------------------------------------------------ parts
    @property
    def blocks(self) -> list[CafoBlock]:
        return [cast(CafoBlock, m) for m in self.layers[: self.num_blocks]]

    @property
    def predictors(self) -> list[CafoPredictor]:
        return [cast(CafoPredictor, m) for m in self.layers[self.num_blocks :]]

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

    # ---------------------------------------------------------------------------- features
    def _token(self, k: int, device: torch.device) -> Hashable:
        """What block k's features depend on: every tensor of blocks ≤ k, and its version."""
        tensors = chain.from_iterable(
            chain(b.parameters(), b.buffers()) for b in self.blocks[: k + 1]
        )
        return (k, str(device), tuple((t.data_ptr(), t._version) for t in tensors))

    def _features(self, x: Tensor, k: int, training: bool) -> Tensor:
        """h_k under no-grad, memoised by input content while the blocks are frozen."""
        blocks = self.blocks[: k + 1]

        def compute(inp: Tensor) -> Tensor:
            with torch.no_grad():
                for block in blocks:
                    inp = block(inp)
            return inp

        if (
            not self.cache_features
            or any(b.training for b in blocks)
            or (training and not self._train_cache_on)
        ):
            return compute(x)
        before = (self.cache.lookups, self.cache.hits)
        h = self.cache.lookup(x, self._token(k, x.device), compute)
        if training:
            self._epoch_counts[0] += self.cache.lookups - before[0]
            self._epoch_counts[1] += self.cache.hits - before[1]
        return h

    # ---------------------------------------------------------------------------- training
    def start_epoch(self, stage: Stage, epoch: int, epochs: int) -> None:
        """The Trainer's epoch-start hook: DFA epoch count and the augmentation check."""
        super().start_epoch(stage, epoch, epochs)
        if stage.name == "dfa":
            self.dfa_epoch += 1
        lookups, hits = self._epoch_counts
        if epoch == 1:
            self._train_cache_on = True
        elif epoch >= 3 and self._train_cache_on and lookups and hits < 0.5 * lookups:
            self._train_cache_on = False  # rows never repeat: augmented data, caching is useless
            self.cache.clear()
        self._epoch_counts = [0, 0]

    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        x = self.split_batch(batch)[0]
        self._unit = stage.name
        if stage.name == "dfa":
            if self.dfa_epochs is not None and int(self.dfa_epoch) > self.dfa_epochs:
                return {"loss": self._dfa_last_loss}  # past the DFA budget: an idle epoch
            # The base chain: every block steps through LocalLayer.train_step on its detached
            # input, block k < K on its feedback surrogate, block K on the head's CE.
            logs = super().train_step(batch, stage)
            self._dfa_last_loss = logs["loss"] = logs[f"loss/{self.blocks[-1].layer_name}"]
            return logs
        pred = self.layers[stage.layers[0]]
        assert isinstance(pred, CafoPredictor)
        if bool(pred.solved):  # skip the features: a solved predictor has nothing to do
            return {"loss": pred.last_loss}
        h = self._features(x, stage.layers[0] - self.num_blocks, training=True)
        return {"loss": pred.fit_batch(h, self.make_context(batch))}

    def make_context(self, batch: Any) -> Context:
        """Labels; in the DFA unit also ``dfa_error``, the error each block's feedback maps.

        ``e = (softmax(o) − Y) / B`` (the per-sample error of the batch-mean CE) comes from one
        no-grad pass through the blocks and the auxiliary head at the current weights, with
        BatchNorm in the unit's train mode; the pass's running-statistics updates are undone, so
        BN statistics move once per step, in the blocks' own forward (Nøkland 2016; ALGORITHMS.md
        §3.1)."""
        ctx = super().make_context(batch)
        if self._unit != "dfa":
            return ctx
        x, y = self.split_batch(batch)
        ctx.extras["dfa_error"] = dfa_error(self.blocks, x, y, self.num_classes)
        return ctx

    # --------------------------------------------------------------------------- inference
    def _finalize(self) -> None:
        for pred in self.predictors:
            pred.finalize()

    def _all_scores(self, x: Tensor) -> list[Tensor]:
        self._finalize()
        scores, h = [], x
        for block, pred in zip(self.blocks, self.predictors, strict=True):
            h = block(h)
            scores.append(pred(h))
        return scores

    def predict(self, x: Tensor) -> Tensor:
        """``log(mean_k q_k)`` (argmax of Σ_k q_k) for ``prob``; ``Σ_k s_k`` for ``logits``."""
        scores = self._all_scores(x)
        if self.aggregate == "logits":
            return torch.stack(scores).sum(0)
        norm = self.normalise()
        mean = torch.stack([norm(s) for s in scores]).mean(0)
        return torch.log(mean.clamp_min(1e-12))  # finite, and its CE is the mixture's NLL

    def unit_scores(self, x: Tensor, stage: Stage) -> Tensor:
        """DFA phase: the auxiliary head on h_K; predictor k: s_k (validation loss = CE(s_k))."""
        self._finalize()
        if stage.name == "dfa":
            h = x
            for block in self.blocks:
                h = block(h)
            head = self.blocks[-1].head
            assert head is not None
            return head(h.flatten(1))
        k = stage.layers[0] - self.num_blocks
        return self.predictors[k](self._features(x, k, training=False))

    def layer_scores(self, x: Tensor) -> dict[str, Tensor]:
        """s_k under block k's name (``layer<k>``), so run.json shows each block's accuracy."""
        return {b.layer_name: s for b, s in zip(self.blocks, self._all_scores(x), strict=True)}
