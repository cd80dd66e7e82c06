"""The ForwardGNN learner: SF, FF-LA, FF-VN, Top2Loss and Top2Input (node classification).

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(ALGORITHMS.md §5). Written from the paper and ALGORITHMS.md only; the reference code
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
STUDY_PROTOCOL.md §3); Top2Loss's states start from a bottom-up forward and Top2Input's from
zeros, details the paper leaves open; FF-VN inference propagates each class graph through all
layers on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from localearn.algorithms.forward_gnn import topdown
from localearn.algorithms.forward_gnn.layers import GraphLayer, goodness, sf_logits
from localearn.algorithms.forward_gnn.link import LinkLayer, LinkSplits
from localearn.algorithms.forward_gnn.variants import (
    augment,
    ffvn_class_edges,
    ffvn_negative_edges,
    label_appended,
)
from torch import Tensor

from localearn.arch import ArchSpec
from localearn.data.graphs import node_mask
from localearn.errors import ConfigError
from localearn.layer import Context
from localearn.learner import OptimizerFactory, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm

from .pipeline import GraphPipelined

VARIANTS = ("sf", "ff_la", "ff_vn", "top2loss", "top2input")
TOP_DOWN = ("top2loss", "top2input")
FF_VARIANTS = ("ff_la", "ff_vn")
AGGREGATIONS = ("sum_layers", "last")


@register_algorithm
class ForwardGNN(GraphPipelined):
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
    schedule = "greedy"
    schedules = ("greedy", "joint")
    default_arch = "gcn:128x2"
    test_arch = "gcn:16x2"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4}
    recipes: ClassVar[dict[str, Recipe]] = {
        "graphs": recipe("ALGORITHMS.md §5.3 (hidden 128; up to 1000 epochs per layer; patience 100 "
                         "validations every 2 epochs = 200 epochs)",
                         {"optimizer": "ALGORITHMS.md §5.1", "lr": "ALGORITHMS.md §5.1",
                          "weight_decay": "ALGORITHMS.md §5.1"},
                         arch="gcn:128x2", epochs=1000, patience=200, optimizer="adam", lr=1e-3, weight_decay=5e-4),
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Graph learners like larger steps (PyG's Cora recipe: Adam 1e-2, wd 5e-4); SF's τ too."""
        return {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
                "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
                "tau": trial.suggest_float("tau", 0.1, 10.0, log=True)}

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] = (1433,),
        num_classes: int = 7,
        schedule: str | None = None,
        variant: str = "sf",
        eval_aggregation: str = "sum_layers",
        tau: float = 1.0,
        theta: float = 2.0,
        test_steps: int = 10,
        grad_clip: float = 1.0,
        task: str = "classification",
        link_objective: str = "dot",
    ) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown ForwardGNN variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if eval_aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown eval_aggregation {eval_aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if variant in TOP_DOWN:
            if schedule == "greedy":
                raise ConfigError(f"variant {variant} trains the whole model at once; use schedule joint")
            schedule = "joint"
        if task not in ("classification", "link"):
            raise ConfigError(f"forward_gnn trains task classification or link, not {task!r}")
        if task == "link" and variant != "sf":
            raise ConfigError(f"link prediction uses the sf layers with link_objective dot|ff, not variant {variant}")
        if test_steps < 3:
            raise ConfigError(f"test_steps must be at least 3 (softmax accumulates from step 2), got {test_steps}")
        super().__init__(arch, input_shape, num_classes, schedule)
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
        if variant in TOP_DOWN:  # the other variants pipeline (.pipeline)
            self.pipeline_refusal = f"every {variant} layer reads the previous step's state of the layer above it"
        self._states: list[Tensor] | None = None  # top-down: the previous step's outputs
        self._state_key: tuple[Any, ...] | None = None

    def graph_layers(self) -> list[GraphLayer]:
        """The layers, typed."""
        return [cast(GraphLayer, layer) for layer in self.layers]

    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        opts = super().configure_optimizers(factory)
        if self.variant in TOP_DOWN and self.grad_clip > 0:
            for layer in self.graph_layers():
                params = list(layer.parameters())
                clip = self.grad_clip

                def hook(opt: Any, args: Any, kwargs: Any, _p: list[Any] = params, _c: float = clip) -> None:
                    torch.nn.utils.clip_grad_norm_(_p, _c)

                assert layer.optimizer is not None
                layer.optimizer.register_step_pre_hook(hook)
        return opts

    # ----------------------------------------------------------------------- data plumbing
    def split_batch(self, batch: Any) -> tuple[Any, Tensor]:
        """The graph and the labels of the nodes it is about (its evaluation or training mask)."""
        return batch, batch.y[node_mask(batch)]

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
        return x, Context(y=extras["train_y"], num_classes=self.num_classes, extras=extras)

    def make_context(self, batch: Any) -> Context:
        if self.task == "link":
            return self.links.context(batch, self.num_classes)
        x, ctx = self._prepare(batch)
        ctx.inputs = x
        return ctx

    # ----------------------------------------------------------------------------- training
    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        """SF and the FF variants: the base chain. Top-down variants are not a chain: every
        layer steps on the previous step's states of the layers around it."""
        if self.variant not in TOP_DOWN:
            return super().train_step(batch, stage)
        x, ctx = self._prepare(batch)
        if self.variant == "top2loss":
            losses = topdown.step_top2loss(self, x, ctx)
        else:
            losses = topdown.step_top2input(self, batch, x, ctx)
        losses["loss"] = sum(losses.values()) / max(len(losses), 1)
        return losses

    # ---------------------------------------------------------------------------- inference
    def _layer_outputs(self, batch: Any, upto: int | None = None) -> list[Tensor]:
        """Per-layer ``(N, C)`` scores of every real node: SF logits, FF goodness, or
        Top2Input's softmax averaged over the accumulated steps."""
        last = len(self.layers) - 1 if upto is None else upto
        layers = list(self.layers)[: last + 1]
        n, c = int(batch.num_nodes), self.num_classes
        if self.variant == "ff_la":
            h, out = label_appended(batch, c, candidates=list(range(c))), []
            for layer in layers:
                h = layer(h, batch.edge_index)
                out.append(goodness(h).T)
            return out
        aug = augment(batch, self.vn_features)
        if self.variant == "ff_vn":
            scores = [aug.x.new_zeros(n, c) for _ in layers]
            for k in range(c):  # one augmented graph per candidate class
                edges, h = ffvn_class_edges(batch, aug, k), aug.x
                for i, layer in enumerate(layers):
                    h = layer(h, edges)
                    scores[i][:, k] = goodness(h[:n])
            return scores
        if self.variant == "top2input":
            return topdown.recurrent_probs(self, batch, aug.x, aug.edge_index)
        h, out = aug.x, []
        for layer in layers:
            h = layer(h, aug.edge_index)
            out.append(sf_logits(h, n, self.tau))
        return out

    def _as_log_probs(self, scores: Tensor) -> Tensor:
        if self.variant == "top2input":
            return scores.clamp_min(1e-12).log()
        return F.log_softmax(scores, 1)

    def _aggregate(self, outputs: list[Tensor]) -> Tensor:
        if self.variant in FF_VARIANTS:
            return outputs[-1] if self.eval_aggregation == "last" else torch.stack(outputs).sum(0)
        if self.eval_aggregation == "last":
            return self._as_log_probs(outputs[-1])
        probs = torch.stack([self._as_log_probs(o).exp() for o in outputs]).mean(0)
        return probs.clamp_min(1e-12).log()  # argmax of Σ_l p_l, and a proper CE

    def predict(self, x: Any) -> Tensor:
        """``(N, C)`` class scores of every real node of graph ``x``."""
        return self._aggregate(self._layer_outputs(x))

    def unit_scores(self, x: Any, stage: Stage) -> Tensor:
        """Greedy units: the layer's own virtual-node logits (or goodness); else ``predict``."""
        if self.schedule_mode == "greedy" and len(stage.layers) == 1:
            i = stage.layers[0]
            return self._layer_outputs(x, upto=i)[i]
        return self.predict(x)

    def evaluate_batch(self, batch: Any, stage: Stage | None = None) -> tuple[Tensor, Tensor]:
        if self.task == "link":  # a greedy unit: its own layer's σ(s); else the mean over layers
            unit = stage.layers[0] if stage is not None and len(stage.layers) == 1 else None
            return self.links.scores(list(self.layers), batch, unit)
        mask = node_mask(batch)
        scores = self.predict(batch) if stage is None else self.unit_scores(batch, stage)
        return scores[mask], batch.y[mask]

    def layer_scores(self, x: Any) -> dict[str, Tensor]:
        mask = node_mask(x)
        outputs = self._layer_outputs(x)
        return {layer.layer_name: out[mask] for layer, out in zip(self.graph_layers(), outputs, strict=True)}
