"""Link prediction as a Trainer task (``task="link"``) for ForwardGNN and its backprop baseline.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(docs/learners/forward_gnn.md#variants, last row; docs/learners/forward_gnn.md#reference for the split).

The edges are split by ``RandomLinkSplit(num_val=0.16, num_test=0.2, neg_sampling_ratio=1.0)``
with training negatives drawn once (fixed 1:1), seeded by its own seed (101) apart from the
model's (the former side loop left Python's ``random``, which PyG's negative sampling also uses,
unseeded, so its Cora AUCs moved by a few thousandths between identical runs). Every ForwardGNN
layer is the node-classification layer ``ReLU(Conv(n(sg(x)), E_train))``, message passing over
the training positive edges only, with a per-layer edge objective:

* ``dot`` (the single-forward / CE objective): ``s(u, v) = Σ_j z_uj z_vj``, BCE with the edge label;
* ``ff``: goodness ``s(u, v) = Σ_j (z_u ⊙ z_v)_j² − θ`` (θ = 2), BCE with the edge label.

These runs are ordinary Trainer runs (``localearn train --algo forward_gnn --task link``): one
unit per layer (greedy), each stopping on the validation ROC-AUC of its own scores with the
protocol's patience and best-state restore; the prediction is the mean over layers of ``σ(s)``,
scored by ROC-AUC (:mod:`localearn.tasks`). The backprop baseline (``backprop_gnn --task link``)
trains the PyG encoder of the same depth and width end to end with the ``dot`` objective. The
top-down link variant of the paper is not implemented.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from localearn.errors import ConfigError
from localearn.layer import Context

from .backprop_gnn import GNNNetwork
from .layers import GraphLayer

OBJECTIVES = ("dot", "ff")
SPLIT = {"num_val": 0.16, "num_test": 0.2, "neg_sampling_ratio": 1.0}


def link_split(data: Any, seed: int = 101) -> tuple[Any, Any, Any]:
    """Train / validation / test link splits (val 0.16, test 0.2, 1:1 negatives), seeded."""
    from torch_geometric.transforms import RandomLinkSplit

    split = RandomLinkSplit(num_val=SPLIT["num_val"], num_test=SPLIT["num_test"], is_undirected=True,
                            add_negative_train_samples=True, neg_sampling_ratio=SPLIT["neg_sampling_ratio"])
    # The split depends on its own seed only and must not disturb the model's: PyG's negative
    # sampling draws from Python's ``random`` as well as torch, so both are forked.
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            train, val, test = split(data)
    finally:
        random.setstate(state)
    return train, val, test


def edge_scores(z: Tensor, pairs: Tensor, objective: str, theta: float = 2.0) -> Tensor:
    """Edge logits: ``Σ_j z_uj z_vj`` (dot) or ``Σ_j (z_u ⊙ z_v)_j² − θ`` (ff)."""
    prod = z[pairs[0]] * z[pairs[1]]
    return prod.sum(-1) if objective == "dot" else prod.pow(2).sum(-1) - theta


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown link objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return objective


class LinkLayer(GraphLayer):
    """A ForwardGNN layer whose local loss is the BCE of its own edge scores."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, objective: str, theta: float = 2.0) -> None:
        super().__init__(kind, in_dim, out_dim, "sf", theta=theta)
        self.objective = check_objective(objective)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        s = edge_scores(h, ctx["edge_label_index"], self.objective, self.theta)
        return F.binary_cross_entropy_with_logits(s, ctx["edge_label"].float())


class LinkNetwork(GNNNetwork):
    """The backprop baseline: a whole PyG encoder trained end to end on dot-product BCE."""

    objective = "dot"

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        s = edge_scores(h, ctx["edge_label_index"], "dot")
        return F.binary_cross_entropy_with_logits(s, ctx["edge_label"].float())


class LinkSplits:
    """The edge split of the graph being trained on, computed once and reused by every batch.

    Training batches are the graph itself and evaluation batches shallow copies of it (with
    ``eval_split``), so the split is keyed on the graph's size and device.
    """

    def __init__(self, seed: int = 101) -> None:
        self.seed = seed
        self._key: tuple[Any, ...] | None = None
        self._splits: tuple[Any, Any, Any] | None = None

    def get(self, graph: Any) -> tuple[Any, Any, Any]:
        key = (int(graph.num_nodes), tuple(graph.edge_index.shape), graph.edge_index.device)
        if self._splits is None or key != self._key:
            base = graph.clone()
            for attr in ("eval_mask", "eval_split"):
                if attr in base:
                    del base[attr]
            self._key, self._splits = key, link_split(base, self.seed)
        return self._splits

    def context(self, graph: Any, num_classes: int) -> Context:
        """The training step's context: the training edges and their labels."""
        train = self.get(graph)[0]
        return Context(y=None, num_classes=num_classes, inputs=train.x,
                       extras={"edge_index": train.edge_index, "edge_label_index": train.edge_label_index,
                               "edge_label": train.edge_label})

    @torch.no_grad()
    def scores(self, layers: list[Any], graph: Any, unit: int | None, theta: float = 2.0) -> tuple[Tensor, Tensor]:
        """Edge probabilities and labels of ``graph.eval_split``: unit ``unit``'s own σ(s), or
        (``unit=None``) the mean over ``layers`` of σ(s). Embeddings pass messages over the
        training edges only."""
        train, val, test = self.get(graph)
        split = {"train": train, "val": val, "test": test}[getattr(graph, "eval_split", "train")]
        last = len(layers) - 1 if unit is None else unit
        h, probs = train.x, []
        for layer in layers[: last + 1]:
            h = layer(h, train.edge_index)
            probs.append(torch.sigmoid(edge_scores(h, split.edge_label_index, layer.objective, theta)))
        p = probs[last] if unit is not None else torch.stack(probs).mean(0)
        return p, split.edge_label
