"""Backprop baselines for ForwardGNN: PyG's GCN, GraphSAGE and GAT trained end to end.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004,
docs/learners/forward_gnn.md#reference: ``torch_geometric.nn.models`` GCN / GraphSAGE / GAT (4 heads) with L layers,
hidden 128, dropout 0 and the last layer mapping to the C class logits (so ``gcn:128x2`` is
F → 128 → C). ``dropout`` (0 by default, as the ForwardGNN protocol) drops the input features and
every hidden layer's output in training, as PyG's ``examples/gcn.py`` does; on the Planetoid
datasets the reference recipe is that example's (hidden 16, dropout 0.5, Adam lr 0.01,
weight decay 5e-4, 200 epochs; its weight decay is on the first layer only, here on all). The
whole network is one layer with a global cross-entropy over the training nodes,
so that it runs through the same trainer, meters and checkpoints as the local learners.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist

from .chain import GRAPH_SEARCH

# PyG examples/gcn.py on Planetoid (hidden 16, Adam lr 0.01, wd 5e-4, dropout 0.5, 200 epochs,
# the test accuracy at the best validation epoch): the recipe the field uses for GCN on these sets.
_PYG_GCN = recipe("PyG examples/gcn.py (Planetoid)", arch="gcn:16x2", dropout=0.5, epochs=200, patience=200,
                  optimizer="adam", lr=0.01, weight_decay=5e-4)


class GNNNetwork(LocalLayer):
    """A whole PyG model as one layer; CE over the training nodes."""

    def __init__(self, kind: str, in_dim: int, hidden: int, depth: int, num_classes: int, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.dropout = float(dropout)
        from torch_geometric.nn.models import GAT, GCN, GraphSAGE

        kw: dict[str, Any] = {"in_channels": in_dim, "hidden_channels": hidden, "num_layers": depth,
                              "out_channels": num_classes, "dropout": self.dropout}
        if kind == "gcn":
            self.net = GCN(**kw)
        elif kind == "sage":
            self.net = GraphSAGE(**kw, aggr="mean")
        elif kind == "gat":
            if hidden % heads:
                raise ConfigError(f"gat width {hidden} is not divisible by its {heads} heads")
            self.net = GAT(**kw, heads=heads)
        else:
            raise ConfigError(f"unknown graph convolution {kind!r}; valid: gcn, sage, gat")

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        if edge_index is None:
            raise ConfigError(f"{self.layer_name} is a graph network: call it as net(x, edge_index)")
        return self.net(F.dropout(x, self.dropout, self.training), edge_index)

    def infer(self, x: Tensor, ctx: Context) -> Tensor:
        return self(x, ctx["edge_index"])  # the edges come with the context

    def scores(self, h: Tensor, ctx: Context) -> Tensor:
        return h

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        return F.cross_entropy(h[ctx["train_idx"]], ctx["train_y"])


@register_algorithm
class BackpropGNN(LocalLearner):
    """End-to-end backprop GNN baseline (see the module docstring).

    Args:
        arch: ``gcn:WxL`` | ``sage:WxL`` | ``gat:WxL``: L convolutions, hidden width W, the last
            one to C logits.
        input_shape: ``(F,)``. num_classes: C. schedule: only ``joint``.
        task: ``classification`` (nodes) or ``link`` (edges: the encoder's last convolution
            outputs a W-wide embedding scored by dot products, see :mod:`.link`).
        dropout: on the input features and every hidden output, in training only.
    """

    name = "backprop_gnn"
    aliases = ("bp_gnn",)
    paper = "Backprop baseline of Park et al., ICLR 2024 (PyG GCN / GraphSAGE / GAT)"
    supports_graphs = True
    cuda_graph_refusal = "PyG message passing scatters into sizes read from the graph at run time"
    block_local = False  # one global loss: the baseline, not a local learner
    coupling = "one global loss: the whole GNN is one layer trained end to end by backprop"
    pipeline_refusal = "its gradient crosses every layer (use --parallel ddp)"
    schedules = ("joint",)
    default_arch = "gcn:128x2"
    test_arch = "gcn:16x2"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4}
    recipes: ClassVar[dict[str, Recipe]] = {
        "graphs": recipe("docs/learners/forward_gnn.md#reference (ForwardGNN's BP baseline: hidden 128, dropout 0, "
                         "up to 1000 "
                         "epochs, patience 100 validations every 2 epochs)",
                         {"lr": "docs/learners/forward_gnn.md#equations",
                          "weight_decay": "docs/learners/forward_gnn.md#equations"},
                         arch="gcn:128x2", dropout=0.0, epochs=1000, patience=200, optimizer="adam",
                         lr=1e-3, weight_decay=5e-4),
        **{name: _PYG_GCN for name in ("cora", "citeseer", "pubmed")},
    }

    search: ClassVar[dict[str, Dist]] = GRAPH_SEARCH  # the same lr / wd ranges as ForwardGNN
    default_input_shape = (1433,)
    default_num_classes = 7

    def __init__(self, *args: Any, task: str = "classification", dropout: float = 0.0, **base: Any) -> None:
        super().__init__(*args, **base)
        if task not in ("classification", "link"):
            raise ConfigError(f"backprop_gnn trains task classification or link, not {task!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"backprop_gnn option dropout must be in [0, 1), got {dropout}")
        self.task = task
        if not self.arch.is_graph:
            raise ConfigError(f"backprop_gnn needs a graph architecture (gcn:/sage:/gat:WxL), got {self.arch}")
        widths = set(self.arch.widths)
        if len(widths) != 1:
            raise ConfigError(f"backprop_gnn uses one hidden width (PyG models), got {self.arch}")
        width = widths.pop()
        if task == "link":  # the last convolution outputs the embedding; stops on validation ROC-AUC
            from .link import LinkNetwork, LinkSplits

            self.stop_metric = "val_acc"  # type: ignore[misc]
            self.links = LinkSplits()
            self.add_layer(LinkNetwork(self.arch.kind, self.input_shape[0], width, self.arch.depth, width))
            return
        self.add_layer(GNNNetwork(self.arch.kind, self.input_shape[0], width, self.arch.depth, self.num_classes,
                                  dropout=dropout))

    def make_context(self, batch: Any) -> Context:
        if self.task == "link":
            return self.links.context(batch, self.num_classes)
        idx = batch.train_mask.nonzero().flatten()
        return Context(y=batch.y[idx], num_classes=self.num_classes, inputs=batch.x,
                       extras={"edge_index": batch.edge_index, "train_idx": idx, "train_y": batch.y[idx]})

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """The node features, with the edges in the context."""
        return x.x, Context(None, self.num_classes, {"edge_index": x.edge_index})

    def evaluate_batch(self, batch: Any, stage: Stage | None = None) -> tuple[Tensor, Tensor]:
        if self.task == "link":
            return self.links.scores(list(self.layers), batch, None)
        return super().evaluate_batch(batch, stage)
