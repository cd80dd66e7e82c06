"""``LocalLearner``: an algorithm, as a chain of :class:`~localearn.layer.LocalLayer` positions.

A learner declares what it is (``name``, ``paper``, ``aliases``, ``supports_graphs``, schedules,
recipes, search space) and, once, its **chain** (docs/concepts/contract.md#chain):

* :meth:`positions`: the layers that travel together, in order (a pipeline rank holds
  contiguous positions; default one layer each);
* :meth:`step_positions`: one training step over some positions (default: every layer of the
  unit steps through ``LocalLayer.train_step``, frozen ones run under no-grad);
* :meth:`eval_input` and :meth:`run_position`: inference, position by position, each position
  giving its output and, when asked, its vote (class scores; by default its last layer's
  :meth:`~localearn.layer.LocalLayer.scores`);
* :meth:`votes` and ``prediction_rule``: which positions vote for a unit or the prediction, and
  how votes combine (``sum`` of scores, or ``mean_prob``: votes are probabilities, the scores are
  the log of their mean).

``train_step``, ``predict``, ``unit_scores``, ``layer_scores`` and the pipeline's rank steps and
evaluation (:mod:`localearn.distributed.pipeline`) are all derived from that declaration; a
learner never builds a loop: the :class:`~localearn.trainer.Trainer` drives it, unit by unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self, cast

import torch
from torch import Tensor, nn

from localearn.arch import ArchSpec, parse_arch
from localearn.data.graphs import node_mask
from localearn.errors import ConfigError
from localearn.feature_cache import FeatureCache, serve_prefix
from localearn.layer import Context, LocalLayer
from localearn.modules import build_from_modules
from localearn.recipes import Recipe
from localearn.space import SEARCH_SPACE, Dist, suggest
from localearn.stage import Losses, OptimizerFactory, Stage

__all__ = ["LocalLearner", "Losses", "OptimizerFactory", "Stage"]

class LocalLearner(nn.Module):
    """Base class of every learner, backprop included.

    Class attributes:
        name, aliases, paper: registry key, other accepted names, the citation.
        supports_graphs: takes torch_geometric graphs instead of image batches.
        schedule / schedules: the default and the supported schedules (``joint``: every layer
            steps on every batch; ``greedy``: one unit per layer, each trained to its stopping
            point, then frozen).
        stop_metric: ``val_loss`` (the protocol default) or ``val_acc`` for learners whose own
            loss is no model-selection signal.
        block_local / coupling: whether every layer's update comes from its own local loss alone
            (checked by the conformance suite), and what couples them when not.
        pipeline_refusal, ddp_refusal: why a parallel mode cannot run the learner ("": it can).
        precision_refusal: precision -> why this learner refuses it; cuda_graph_refusal: why a
            CUDA graph cannot capture its step (data-dependent shapes or control flow).
        prediction_rule: ``sum`` | ``mean_prob`` (see the module docstring).
        default_arch, test_arch, test_options: the default spec, and the conformance fixture's.
        default_optimizer, recipes: the reference recipe (:mod:`localearn.recipes`).
        search: additions to the shared search space (:data:`localearn.space.SEARCH_SPACE`).
        update_defaults: the update-policy settings the learner's options imply.
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
    prediction_rule: str = "sum"
    default_arch: ClassVar[str] = "mlp:2x1000"
    default_input_shape: ClassVar[tuple[int, ...]] = (1, 28, 28)
    default_num_classes: ClassVar[int] = 10
    test_arch: ClassVar[str] = "mlp:2x32"
    test_options: ClassVar[dict[str, Any]] = {}
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
    recipes: ClassVar[dict[str, Recipe]] = {}
    search: ClassVar[dict[str, Dist]] = {}
    pipeline_refusal: str = ""
    ddp_refusal: str = ""
    precision_refusal: ClassVar[dict[str, str]] = {}
    cuda_graph_refusal: ClassVar[str] = ""  # why --cuda-graphs cannot capture this learner's step
    # Update-policy settings this learner's options imply (localearn.update), e.g. CCL's
    # network-wide clip or FF's cool-down; the run's TrainConfig overrides each.
    update_defaults: Mapping[str, Any] = {}

    layers: nn.ModuleList

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        schedule: str | None = None,
    ) -> None:
        super().__init__()
        self.arch = parse_arch(arch or self.default_arch)
        self.input_shape = tuple(int(s) for s in (input_shape or self.default_input_shape))
        num_classes = self.default_num_classes if num_classes is None else num_classes
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        mode = schedule or self.schedule
        if mode not in self.schedules:
            raise ConfigError(f"{self.name} does not support schedule {mode!r}; supported: {', '.join(self.schedules)}")
        self.schedule_mode = mode
        self.layers = nn.ModuleList()
        self.prefix_cache: FeatureCache | None = None  # set by the Trainer (prefix_cache_gb): a frozen prefix's memo

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
        """Every optimizer the learner steps, in module order (saved and restored by checkpoints)."""
        return [m.optimizer for m in self.modules() if isinstance(m, LocalLayer) and m.optimizer is not None]

    def split_batch(self, batch: Any) -> tuple[Any, Tensor]:
        """Inputs and targets of a batch (image learners: ``(x, y)``; graph learners: the graph
        and the labels of the nodes it is about, :func:`~localearn.data.graphs.node_mask`)."""
        if self.supports_graphs:
            return batch, batch.y[node_mask(batch)]
        return batch[0], batch[1]

    def eval_rows(self, batch: Any) -> Tensor | None:
        """The rows of the scores that ``split_batch``'s targets label (None: all): a graph learner
        scores every node, and the batch's node mask selects."""
        return node_mask(batch) if self.supports_graphs else None

    def select(self, scores: Tensor, batch: Any) -> Tensor:
        """``scores`` restricted to :meth:`eval_rows`."""
        rows = self.eval_rows(batch)
        return scores if rows is None else scores[rows]

    # ----------------------------------------------------------------------- training hooks
    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        """Give every layer its own optimizer from ``factory``; returns them in a stable order."""
        for layer in self.local_layers:
            layer.optimizer = factory(layer.parameters())
        return self.optimizers()

    def make_context(self, batch: Any) -> Context:
        """What the layers need beside their input on a training batch; by default the labels.
        A learner that builds the first layer's input from the batch returns it as ``inputs``."""
        _, y = self.split_batch(batch)
        return Context(y=y, num_classes=self.num_classes)

    def stages(self) -> list[Stage]:
        """The training units: the whole network (joint) or one per layer (greedy)."""
        if self.schedule_mode == "greedy":
            return [Stage(layer.layer_name, (i,)) for i, layer in enumerate(self.local_layers)]
        return [Stage("network", tuple(range(len(self.layers))))]

    def start_epoch(self, stage: Stage, epoch: int, epochs: int) -> None:
        """Before every epoch of ``stage`` (1-based ``epoch`` of at most ``epochs``): train mode
        for the unit's layers, eval mode for frozen ones (no BN statistics drift)."""
        self.train()
        for i, layer in enumerate(self.local_layers):
            if i not in stage.layers:
                layer.eval()
        if self.prefix_cache is not None and not self.prefix_cache.rows_repeat(epoch):
            self.prefix_cache = None  # rows never repeat (augmented data): recompute, as without it

    # ---------------------------------------------------------------------------- the chain
    def positions(self) -> list[tuple[int, ...]]:
        """The chain's positions in order; a position's layers live on one pipeline rank."""
        return [(i,) for i in range(len(self.layers))]

    def step_positions(self, h: Any, ctx: Context, stage: Stage,
                       positions: Sequence[tuple[int, ...]]) -> tuple[Any, Losses]:
        """One training step over ``positions`` on input ``h``: the unit's layers step, the others
        run frozen under no-grad. Returns the last output and the per-layer losses (detached device
        tensors). One process runs every position; a pipeline rank its own (the same code)."""
        losses: Losses = {}
        own = self.local_layers
        for i in (i for pos in positions for i in pos):
            if i in stage.layers:
                h, losses[f"loss/{own[i].layer_name}"] = own[i].train_step(h, ctx)
            else:
                with torch.no_grad():
                    h = own[i].infer(h, ctx)
        return h, losses

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """The first position's inference input for inputs ``x``, and the inference context, for
        the scores of ``stage`` (None: the prediction)."""
        return x, Context(y=None, num_classes=self.num_classes)

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Position ``p`` on inference input ``h``: its output and, if ``vote``, its class scores
        (those of its last layer; probabilities under the ``mean_prob`` rule)."""
        pos = self.positions()[p]
        for i in pos:
            h = self.local_layers[i].infer(h, ctx)
        return h, self.local_layers[pos[-1]].scores(h, ctx) if vote else None

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """The positions whose votes make the scores of ``stage`` (None: the prediction). By
        default the last position, or for a one-layer unit that layer's position."""
        positions = self.positions()
        if stage is not None and len(stage.layers) == 1:
            return tuple(p for p, pos in enumerate(positions) if stage.layers[0] in pos)
        return (len(positions) - 1,)

    def combine(self, total: Tensor, stage: Stage | None) -> Tensor:
        """The summed votes as scores (``prediction_rule``); their CE and argmax are reported."""
        if self.prediction_rule == "mean_prob":  # log of the mean probability: a proper CE
            return torch.log((total / len(self.votes(stage))).clamp_min(1e-12))
        return total

    # ------------------------------------------------------------------------ derived: train
    def train_step(self, batch: Any, stage: Stage) -> Losses:
        """The chain's step on one batch: context, the frozen prefix (memoised when
        ``prefix_cache`` is set, see :mod:`localearn.feature_cache`), then :meth:`step_positions`
        up to the unit's last position. Returns the per-layer losses and their mean, ``loss``."""
        ctx = self.make_context(batch)
        h = ctx.inputs if ctx.inputs is not None else self.split_batch(batch)[0]
        positions = self.positions()
        last = max((p for p, pos in enumerate(positions) if set(pos) & set(stage.layers)), default=-1)
        start, h = serve_prefix(self, h, ctx, stage, positions)
        _, losses = self.step_positions(h, ctx, stage, positions[start:last + 1])
        if "loss" not in losses:  # a learner may report its own objective (NoProp's L_t)
            losses["loss"] = torch.stack(list(losses.values())).mean() if losses else torch.zeros(())
        return losses

    # ---------------------------------------------------------------------- derived: scores
    def scores(self, x: Any, stage: Stage | None = None) -> Tensor:
        """The chain's scores of ``stage`` (None: the prediction): every position up to the last
        voter runs, voters' scores are summed and :meth:`combine` applies the prediction rule."""
        votes = self.votes(stage)
        h, ctx = self.eval_input(x, stage)
        total: Tensor | None = None
        for p in range(max(votes) + 1):
            h, s = self.run_position(p, h, ctx, p in votes)
            if s is not None:
                total = s if total is None else total + s
        if total is None:  # e.g. an autoencoder's chain
            hint = "; use reconstruct(x)" if self.task == "autoencoder" else ""
            raise ConfigError(f"{self.name} ({self.task}) gives no class scores{hint}")
        return self.combine(total, stage)

    def predict(self, x: Any) -> Tensor:
        """Class scores ``(B, C)``; argmax is the prediction."""
        return self.scores(x, None)

    def unit_scores(self, x: Any, stage: Stage) -> Tensor:
        """The scores whose cross-entropy is ``stage``'s validation loss (Rule 1)."""
        return self.scores(x, stage)

    def layer_scores(self, x: Any) -> dict[str, Tensor]:
        """Every position's own vote (under its first layer's name): per-layer accuracies."""
        h, ctx = self.eval_input(x)
        out: dict[str, Tensor] = {}
        for p, pos in enumerate(self.positions()):
            h, s = self.run_position(p, h, ctx, True)
            if s is not None:
                out[self.local_layers[pos[0]].layer_name] = s
        return out

    def evaluate_batch(self, batch: Any, stage: Stage | None = None) -> tuple[Tensor, Tensor]:
        """Scores and targets for one evaluation batch, in the task's form (classification here;
        learners of other tasks override it)."""
        x, y = self.split_batch(batch)
        return self.select(self.scores(x, stage), batch), y

    # ------------------------------------------------------------------------------ report
    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Suggested values from the shared space updated by this learner's ``search`` (Rule 4):
        TrainConfig fields go to the trainer, the rest are learner options."""
        return suggest(trial, {**SEARCH_SPACE, **cls.search})

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """What ``localearn algos`` prints."""
        # a refusal "": the mode runs this learner (some options may still refuse, saying why)
        return {"schedules": list(cls.schedules), "default_schedule": cls.schedule, "graphs": cls.supports_graphs,
                "block_local": cls.block_local, "coupling": cls.coupling or None, "stop_metric": cls.stop_metric,
                "default_arch": cls.default_arch, "pipeline_refusal": cls.pipeline_refusal,
                "ddp_refusal": cls.ddp_refusal, "precision_refusal": dict(cls.precision_refusal)}

    @classmethod
    def from_modules(cls, blocks: Sequence[nn.Module], input_shape: Sequence[int], num_classes: int = 10,
                     **options: Any) -> Self:
        """This learner over your own ``nn.Module`` blocks, one local layer each (no subclass, no
        arch string); ``options`` are the learner's. See :mod:`localearn.modules`."""
        return build_from_modules(cls, blocks, input_shape, num_classes, **options)
