"""``LocalLearner``: an algorithm, as a stack of :class:`~localearn.layer.LocalLayer` objects.

A learner declares what it is (``name``, ``paper``, ``aliases``, ``supports_graphs``, default
``schedule``), builds ``self.layers`` from an architecture spec, and says how to make a layer
context from a batch and how to predict. It never builds a loop: the
:class:`~localearn.trainer.Trainer` drives it, stage by stage (``stages()``), and calls
:meth:`LocalLearner.train_step` once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, cast

import torch
from torch import Tensor, nn

from localearn.arch import ArchSpec, parse_arch
from localearn.errors import ConfigError
from localearn.feature_cache import FeatureCache
from localearn.layer import Context, LocalLayer
from localearn.recipes import Recipe

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Stage:
    """A training unit (STUDY_PROTOCOL.md §3): the layers trained together to one stopping point.

    Attributes:
        name: shown in reports (``network``, ``layer0``, ``predictor2``, ...).
        layers: indices into ``learner.layers`` that this unit trains.
        max_epochs: the unit's own epoch budget, below the trainer's cap (e.g. a closed-form
            predictor that is solved in one pass); None: the trainer's cap.
    """

    name: str
    layers: tuple[int, ...]
    max_epochs: int | None = None


class LocalLearner(nn.Module):
    """Base class of every learner, backprop included.

    Class attributes:
        name: registry key; aliases: other accepted names; paper: the citation shown by
            ``localearn algos``.
        supports_graphs: takes torch_geometric graphs instead of image batches.
        schedule: the default schedule, ``joint`` (every layer steps on every batch) or ``greedy``
            (one stage per layer, each trained to its stopping point, then frozen);
            schedules: the schedules this learner supports.
        stop_metric: ``val_loss`` (CE of the unit's scores, the protocol default) or ``val_acc``
            for learners whose own loss is no model-selection signal.
        pipeline_refusal, ddp_refusal: why a parallel mode cannot run the learner ("" : it can).
        block_local: whether every layer's update is computed from its own local loss alone
            (checked by the conformance suite); False for the backprop baselines, learners local
            in time only (NoProp-CT/FM) and updates coupled across layers (CCL's network clip).
        coupling: what couples the updates when ``block_local`` is False (shown by
            ``localearn algos``; required by the conformance suite).
        default_arch: used when no ``arch`` is given; test_arch: a small one for the
            conformance suite.
        default_optimizer: optimizer name, lr and weight decay of the reference recipe.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    supports_graphs: ClassVar[bool] = False
    schedule: ClassVar[str] = "joint"
    schedules: ClassVar[tuple[str, ...]] = ("joint",)
    stop_metric: ClassVar[str] = "val_loss"
    block_local: bool = True
    coupling: ClassVar[str] = ""
    task: str = "classification"
    default_arch: ClassVar[str] = "mlp:2x1000"
    test_arch: ClassVar[str] = "mlp:2x32"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    # Reference recipes per data family / architecture kind / dataset (localearn.recipes).
    recipes: ClassVar[dict[str, Recipe]] = {}
    # Why ``--parallel pipeline`` / ``ddp`` cannot run this learner ("" : it can). A pipelined
    # learner derives from localearn.distributed.pipelined.Pipelined instead.
    pipeline_refusal: str = "it does not declare how its chain splits across ranks"
    ddp_refusal: str = ""

    layers: nn.ModuleList

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        schedule: str | None = None,
    ) -> None:
        super().__init__()
        self.arch = parse_arch(arch or self.default_arch)
        self.input_shape = tuple(int(s) for s in input_shape)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        mode = schedule or self.schedule
        if mode not in self.schedules:
            raise ConfigError(
                f"{self.name} does not support schedule {mode!r}; supported: "
                f"{', '.join(self.schedules)}"
            )
        self.schedule_mode = mode
        self.layers = nn.ModuleList()
        # Set by the Trainer (TrainConfig.prefix_cache_gb): memoises a greedy unit's frozen prefix.
        self.prefix_cache: FeatureCache | None = None
        self._prefix_seen = (0, 0)

    # ------------------------------------------------------------------------------ helpers
    @property
    def local_layers(self) -> list[LocalLayer]:
        """``self.layers`` typed as local layers."""
        return cast(list[LocalLayer], list(self.layers))

    def add_layer(self, layer: LocalLayer) -> LocalLayer:
        """Append a layer and give it its report name (``layer<i>``)."""
        layer.layer_name = f"layer{len(self.layers)}"
        self.layers.append(layer)
        return layer

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the learner steps, in module order (saved and restored by checkpoints):
        those of ``self.layers`` and of any other local layer it holds (e.g. FF's classifier)."""
        return [m.optimizer for m in self.modules() if isinstance(m, LocalLayer) and m.optimizer is not None]

    def split_batch(self, batch: Any) -> tuple[Any, Tensor]:
        """Inputs and targets of a batch (image learners: ``(x, y)``; graph learners: the graph
        and the labels of the nodes it is about)."""
        return batch[0], batch[1]

    # -------------------------------------------------------------------------------- hooks
    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        """Give every layer its own optimizer from ``factory``; returns them in a stable order."""
        for layer in self.local_layers:
            layer.optimizer = factory(layer.parameters())
        return self.optimizers()

    def make_context(self, batch: Any) -> Context:
        """What the layers need beside their input; by default the labels. A learner that builds
        the first layer's input from the batch returns it as ``Context.inputs``."""
        _, y = self.split_batch(batch)
        return Context(y=y, num_classes=self.num_classes)

    def stages(self) -> list[Stage]:
        """The training units: the whole network (joint) or one per layer (greedy)."""
        if self.schedule_mode == "greedy":
            return [Stage(layer.layer_name, (i,)) for i, layer in enumerate(self.local_layers)]
        return [Stage("network", tuple(range(len(self.layers))))]

    def start_epoch(self, stage: Stage, epoch: int, epochs: int) -> None:
        """Called by the Trainer before every epoch of ``stage`` (1-based ``epoch`` of at most
        ``epochs``): train mode for the unit's layers, eval mode for frozen ones (no BN statistics
        drift). A learner whose recipe changes with the epoch (FF's lr cool-down, CaFo's cache
        bookkeeping) extends it."""
        self.train()
        for i, layer in enumerate(self.local_layers):
            if i not in stage.layers:
                layer.eval()
        cache = self.prefix_cache
        if cache is not None:  # the last epoch's hit rate; by the 2nd epoch of a unit rows repeat
            lookups, hits = cache.lookups - self._prefix_seen[0], cache.hits - self._prefix_seen[1]
            if epoch >= 3 and lookups and hits < 0.5 * lookups:
                self.prefix_cache = None  # rows never repeat (augmented data): recompute, as without it
            self._prefix_seen = (cache.lookups, cache.hits)

    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        """The chain: ``layer.train_step`` through the layers of ``stage``.

        The chain starts from ``ctx.inputs`` (or the batch's inputs). Layers before the stage run
        under no-grad through :meth:`LocalLayer.infer` (so context-aware layers get their graph):
        the frozen prefix of a greedy schedule is recomputed every batch, as in the reference, or,
        with ``TrainConfig.prefix_cache_gb > 0``, read from a content-keyed memo of its output
        (bounded; rows past the bound and augmented data fall back to recomputing); layers after
        the unit are skipped. Learners extend this (CCL's parked clip, NoProp's head);
        none re-implements it.
        """
        ctx = self.make_context(batch)
        h = ctx.inputs if ctx.inputs is not None else self.split_batch(batch)[0]
        start = self._cached_prefix(h, ctx, stage)
        if start:
            h = cast(FeatureCache, self.prefix_cache).lookup(h, self._prefix_token(start, h), self._prefix(start, ctx))
        _, losses = self.chain(h, ctx, stage, range(start, max(stage.layers, default=-1) + 1))
        losses["loss"] = sum(losses.values()) / max(len(losses), 1)
        return losses

    def chain(self, h: Any, ctx: Context, stage: Stage, layers: Iterable[int]) -> tuple[Any, dict[str, float]]:
        """Layers ``layers`` of the chain on ``h``: those of ``stage`` step, the others run frozen
        under no-grad. Returns the last output and the per-layer losses. A pipeline rank runs its
        own contiguous slice of the same chain (:mod:`localearn.distributed.pipeline`)."""
        losses: dict[str, float] = {}
        own = self.local_layers
        for i in layers:
            layer = own[i]
            if i in stage.layers:
                h, loss = layer.train_step(h, ctx)
                losses[f"loss/{layer.layer_name}"] = float(loss)
            else:
                with torch.no_grad():
                    h = layer.infer(h, ctx)
        return h, losses

    def _cached_prefix(self, x: Any, ctx: Context, stage: Stage) -> int:
        """How many frozen leading layers the prefix cache may serve (0: none). Only for a batch's
        own inputs (no learner-built ``ctx.inputs``) and layers in eval mode, whose outputs
        depend on each row alone."""
        first = min(stage.layers, default=0)
        if self.prefix_cache is None or ctx.inputs is not None or not isinstance(x, Tensor) or first == 0:
            return 0
        return 0 if any(layer.training for layer in self.local_layers[:first]) else first

    def _prefix_token(self, n: int, x: Tensor) -> Hashable:
        """What the first ``n`` layers' outputs depend on: every tensor of theirs, and its version."""
        tensors = [t for layer in self.local_layers[:n] for t in (*layer.parameters(), *layer.buffers())]
        return (n, str(x.device), tuple((t.data_ptr(), t._version) for t in tensors))

    def _prefix(self, n: int, ctx: Context) -> Callable[[Tensor], Tensor]:
        def compute(x: Tensor) -> Tensor:
            with torch.no_grad():
                for layer in self.local_layers[:n]:
                    x = layer.infer(x, ctx)
            return x
        return compute

    # ------------------------------------------------------------------------------ tuning
    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """This learner's Optuna search space (STUDY_PROTOCOL.md Rule 4).

        Returns a flat dict of suggested values: keys that are :class:`~localearn.trainer.TrainConfig`
        fields (``lr``, ``weight_decay``, ``optimizer``, ``batch_size``, ...) go to the trainer, the
        rest are learner options. The default covers three decades of lr and of weight decay; a
        learner overrides it to add its own knobs (kept beside the algorithm).
        """
        return {
            "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        }

    # ---------------------------------------------------------------------------- inference
    def predict(self, x: Any) -> Tensor:  # pragma: no cover - abstract
        """Class scores ``(B, C)``; argmax is the prediction."""
        raise NotImplementedError

    def unit_scores(self, x: Any, stage: Stage) -> Tensor:
        """The scores whose cross-entropy is ``stage``'s validation loss (Rule 1).

        By default the learner's prediction; sequential learners return the stage's own head.
        """
        return self.predict(x)

    def layer_scores(self, x: Any) -> dict[str, Tensor]:
        """Per-layer class scores for per-layer diagnostics (each layer's own accuracy)."""
        return {}

    def evaluate_batch(self, batch: Any, stage: Stage | None = None) -> tuple[Tensor, Tensor]:
        """Scores and targets for one evaluation batch (graph learners select their node mask)."""
        x, y = self.split_batch(batch)
        scores = self.predict(x) if stage is None else self.unit_scores(x, stage)
        return scores, y

    # ------------------------------------------------------------------------------ report
    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """What ``localearn algos`` prints."""
        return {
            "schedules": list(cls.schedules),
            "default_schedule": cls.schedule,
            "graphs": cls.supports_graphs,
            "block_local": cls.block_local,
            "coupling": cls.coupling or None,
            "stop_metric": cls.stop_metric,
            "default_arch": cls.default_arch,
            # "" : the mode runs this learner (some options may still refuse, saying why).
            "pipeline_refusal": cls.pipeline_refusal,
            "ddp_refusal": cls.ddp_refusal,
        }

    @classmethod
    def from_modules(cls, blocks: Sequence[nn.Module], input_shape: Sequence[int], num_classes: int = 10,
                     **options: Any) -> Self:
        """This learner over your own ``nn.Module`` blocks, one local layer each (no subclass, no
        arch string); ``options`` are the learner's. See :mod:`localearn.modules`."""
        from localearn.modules import build_from_modules

        return build_from_modules(cls, blocks, input_shape, num_classes, **options)
