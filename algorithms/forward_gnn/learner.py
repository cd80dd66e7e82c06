"""The ForwardGNN learner: SF, FF-LA, FF-VN, Top2Loss and Top2Input (node classification).

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(docs/learners/forward_gnn.md). Written from the paper and docs/learners/forward_gnn.md only; the reference code
(facebookresearch/forwardgnn, CC-BY-NC) was not read.

Every layer is a :class:`~localearn.algorithms.forward_gnn.layers.GraphLayer` with its own Adam
(lr 1e-3, wd 5e-4) and updates through ``LocalLayer.train_step``. Variants:

* ``sf`` (default): virtual nodes; layer loss CE of ``⟨h_v, c_k⟩/τ`` over training nodes.
* ``ff_la``: the input is ``x ⊕ label``; positive graph (true label on training nodes) and C−1
  negative graphs (each wrong label); FF goodness BCE with θ = 2. Inference: C passes.
* ``ff_vn``: virtual nodes; negative graphs link training nodes to a wrong class node; the next
  layer's inputs are the positive graph's outputs. Inference: one augmented graph per class.
* ``top2loss`` / ``top2input``: the whole model is one unit (joint schedule, one step per epoch,
  gradients clipped to norm 1.0 per layer), with the detached previous-step states of the layers
  above entering the loss (Top2Loss: SF CE of their mean with the layer's own output) or the
  input (Top2Input: ``n(h⁽ˡ⁻¹⁾) ⊕ n(h⁽ˡ⁺¹⁾)``, labels above the top layer; even layers step, then
  odd ones; ``test_steps`` recurrent steps at inference, softmax accumulated from step 2 on).

Prediction (``eval_aggregation``): ``sum_layers`` (the paper's rule: Σ_l softmax of the layer's
virtual-node logits, or Σ_l goodness for the FF variants) or ``last``. Probability sums are
returned as ``log(mean_l p_l)``, which has the same argmax and gives a proper cross-entropy.

Deviations: the FF variants stop on validation accuracy (their BCE is no selection signal,
docs/concepts/protocol.md#rule-1); Top2Loss's states start from a bottom-up forward and Top2Input's from
zeros, details the paper leaves open; FF-VN inference propagates each class graph through all
layers on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from localearn.algorithms.forward_gnn import topdown
from localearn.algorithms.forward_gnn.layers import GraphLayer
from localearn.algorithms.forward_gnn.link import LinkLayer, LinkSplits
from localearn.algorithms.forward_gnn.variants import (
    augment,
    ffvn_negative_edges,
    label_appended,
)
from torch import Tensor

from localearn.errors import ConfigError
from localearn.layer import Context
from localearn.learner import Losses, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform

from .chain import GRAPH_SEARCH, TOP_DOWN, GraphChain

VARIANTS = ("sf", "ff_la", "ff_vn", "top2loss", "top2input")
FF_VARIANTS = ("ff_la", "ff_vn")
AGGREGATIONS = ("sum_layers", "last")


@register_algorithm
class ForwardGNN(GraphChain):
    """Forward learning of GNNs (see the module docstring).

    Args:
        arch: ``gcn:WxL``, ``sage:WxL`` or ``gat:WxL`` (GAT: 4 heads of width W/4).
        input_shape: ``(F,)``, the node feature count.
        num_classes: C.
        schedule: ``greedy`` (default; one unit per layer) or ``joint``; top-down variants are
            always ``joint``.
        variant: ``sf`` | ``ff_la`` | ``ff_vn`` | ``top2loss`` | ``top2input``.
        eval_aggregation: ``sum_layers`` | ``last``.
        tau: SF temperature τ. theta: FF threshold θ.
        test_steps: Top2Input's recurrent inference steps (softmax accumulated from step 2 on).
        grad_clip: gradient-norm clip of the top-down variants (0 disables).
        task: ``classification`` (nodes) or ``link`` (edges, :mod:`.link`).
        link_objective: the link layers' edge objective, ``dot`` | ``ff``.
    """

    name = "forward_gnn"
    aliases = ("fgnn",)
    paper = "Park et al., Forward Learning of Graph Neural Networks, ICLR 2024, arXiv 2403.11004"
    supports_graphs = True
    cuda_graph_refusal = "PyG message passing scatters into sizes read from the graph at run time"
    schedule = "greedy"
    schedules = ("greedy", "joint")
    default_arch = "gcn:128x2"
    test_arch = "gcn:16x2"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4}
    recipes: ClassVar[dict[str, Recipe]] = {
        "graphs": recipe("docs/learners/forward_gnn.md#reference (hidden 128; up to 1000 epochs per layer; "
                         "patience 100 "
                         "validations every 2 epochs = 200 epochs)",
                         {"optimizer": "docs/learners/forward_gnn.md#equations",
                          "lr": "docs/learners/forward_gnn.md#equations",
                          "weight_decay": "docs/learners/forward_gnn.md#equations"},
                         arch="gcn:128x2", epochs=1000, patience=200, optimizer="adam", lr=1e-3, weight_decay=5e-4),
    }

    search: ClassVar[dict[str, Dist]] = {**GRAPH_SEARCH, "tau": log_uniform(0.1, 10.0)}  # and SF's τ
    default_input_shape = (1433,)
    default_num_classes = 7

    def __init__(
        self,
        *args: Any,
        variant: str = "sf",
        eval_aggregation: str = "sum_layers",
        tau: float = 1.0,
        theta: float = 2.0,
        test_steps: int = 10,
        grad_clip: float = 1.0,
        task: str = "classification",
        link_objective: str = "dot",
        **base: Any,
    ) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown ForwardGNN variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if eval_aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown eval_aggregation {eval_aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if variant in TOP_DOWN:
            if base.get("schedule") == "greedy":
                raise ConfigError(f"variant {variant} trains the whole model at once; use schedule joint")
            base["schedule"] = "joint"
        if task not in ("classification", "link"):
            raise ConfigError(f"forward_gnn trains task classification or link, not {task!r}")
        if task == "link" and variant != "sf":
            raise ConfigError(f"link prediction uses the sf layers with link_objective dot|ff, not variant {variant}")
        if test_steps < 3:
            raise ConfigError(f"test_steps must be at least 3 (softmax accumulates from step 2), got {test_steps}")
        super().__init__(*args, **base)
        if not self.arch.is_graph:
            raise ConfigError(f"forward_gnn needs a graph architecture (gcn:/sage:/gat:WxL), got {self.arch}")
        if len(self.input_shape) != 1:
            raise ConfigError(f"forward_gnn takes node features (F,), got input shape {self.input_shape}")
        self.variant, self.eval_aggregation = variant, eval_aggregation
        self.tau, self.test_steps, self.grad_clip = float(tau), int(test_steps), float(grad_clip)
        feat, c, widths = self.input_shape[0], self.num_classes, self.arch.widths
        self.task = task
        if task == "link":  # edge scores, no virtual nodes; stops on validation ROC-AUC
            self.stop_metric = "val_acc"  # type: ignore[misc]
            self.links = LinkSplits()
            self.register_buffer("vn_features", torch.zeros(0))
            for i, width in enumerate(widths):
                self.add_layer(LinkLayer(self.arch.kind, feat if i == 0 else widths[i - 1], width,
                                         link_objective, theta))
            return
        # Drawn once from the global seed and then fixed; a buffer so that checkpoints keep it.
        self.register_buffer("vn_features", torch.randn(c, feat))
        for i, width in enumerate(widths):
            lower = (feat + c if variant == "ff_la" else feat) if i == 0 else widths[i - 1]
            if variant == "top2input":
                upper = widths[i + 1] if i + 1 < len(widths) else c
                self.add_layer(GraphLayer(self.arch.kind, lower + upper, width, "sf", split=lower))
            else:
                loss = "sf" if variant == "sf" else variant
                self.add_layer(GraphLayer(self.arch.kind, lower, width, loss, theta=theta))
        if variant in FF_VARIANTS:
            self.stop_metric = "val_acc"  # type: ignore[misc]  # goodness BCE selects badly
        # SF votes are probabilities averaged over layers; FF votes are goodness, summed.
        self.prediction_rule = "sum" if variant in FF_VARIANTS else "mean_prob"
        if variant in TOP_DOWN:  # the other variants pipeline (.chain)
            self.pipeline_refusal = f"every {variant} layer reads the previous step's state of the layer above it"
            self.update_defaults = {"grad_clip": self.grad_clip}  # per layer, by the Trainer's update policy
        self._states: list[Tensor] | None = None  # top-down: the previous step's outputs
        self._state_key: tuple[Any, ...] | None = None

    def graph_layers(self) -> list[GraphLayer]:
        """The layers, typed."""
        return [cast(GraphLayer, layer) for layer in self.layers]

    # ----------------------------------------------------------------------- data plumbing
    def _prepare(self, batch: Any) -> tuple[Tensor, Context]:
        """The first layer's input and the context of one training step."""
        train_idx = batch.train_mask.nonzero().flatten()
        extras: dict[str, Any] = {"train_idx": train_idx, "train_y": batch.y[train_idx],
                                  "num_real": int(batch.num_nodes), "tau": self.tau}
        if self.variant == "ff_la":
            x = label_appended(batch, self.num_classes, shifts=list(range(self.num_classes)))
            extras["edge_index"] = batch.edge_index
        else:
            aug = augment(batch, self.vn_features)
            x = aug.x
            extras["edge_index"] = aug.edge_index
            if self.variant == "ff_vn":
                # Stacked (C-1, 2, E): the negative graphs have equal edge counts, and a tensor can
                # cross a pipeline link where a list cannot.
                extras["neg_edge_indices"] = torch.stack(ffvn_negative_edges(batch, aug, self.num_classes))
        if self.variant == "top2input":
            extras["graph"] = batch  # its inputs hold the label matrix (one process only: not a chain)
        return x, Context(y=extras["train_y"], num_classes=self.num_classes, extras=extras)

    def make_context(self, batch: Any) -> Context:
        if self.task == "link":
            return self.links.context(batch, self.num_classes)
        x, ctx = self._prepare(batch)
        ctx.inputs = x
        return ctx

    # ----------------------------------------------------------------------------- training
    def step_positions(self, h: Any, ctx: Context, stage: Stage,
                       positions: Sequence[tuple[int, ...]]) -> tuple[Any, Losses]:
        """SF and the FF variants: the base chain. Top-down variants: every layer steps on the
        previous step's states of the layers around it (:mod:`.topdown`)."""
        if self.variant not in TOP_DOWN:
            return super().step_positions(h, ctx, stage, positions)
        assert len(positions) == len(self.layers), "top-down variants step all layers together (one process)"
        if self.variant == "top2loss":
            return h, topdown.step_top2loss(self, h, ctx)
        return h, topdown.step_top2input(self, ctx["graph"], h, ctx)

    def evaluate_batch(self, batch: Any, stage: Stage | None = None) -> tuple[Tensor, Tensor]:
        if self.task == "link":  # a greedy unit: its own layer's σ(s); else the mean over layers
            unit = stage.layers[0] if stage is not None and len(stage.layers) == 1 else None
            return self.links.scores(list(self.layers), batch, unit)
        return super().evaluate_batch(batch, stage)
