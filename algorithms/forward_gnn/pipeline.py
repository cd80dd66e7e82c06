"""ForwardGNN across pipeline ranks: each rank holds some layers, the graph travels with the states.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004. An SF,
FF-LA or FF-VN layer reads the previous layer's node states and the graph (edges, training nodes
and labels, virtual nodes), never a later layer, so the chain can be cut between any two layers
(:mod:`localearn.distributed.pipelined`). The graph must fit each rank: it travels in the layer
context with every message (rank 0 builds it, with its virtual nodes, as one process does), and
the pipelined schedule computes exactly what one process computes.

Evaluation carries the node states and the graph; each voting layer adds its per-node scores
(SF: softmax of its virtual-node logits; FF: its goodness per candidate class) for the nodes of
the split, and the last rank applies :meth:`ForwardGNN.predict`'s rule (``log`` of the mean
probability, or the goodness sum). FF-VN's candidate graphs travel stacked, one per class.
Top2Loss and Top2Input refuse: every layer reads the previous step's state of the layer above.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from localearn.data.graphs import node_mask
from localearn.distributed.pipelined import Pipelined
from localearn.layer import Context
from localearn.learner import Stage

from .layers import GraphLayer, goodness, sf_logits
from .variants import augment, ffvn_class_edges, label_appended


class GraphPipelined(Pipelined):
    """The pipeline part of :class:`~localearn.algorithms.forward_gnn.ForwardGNN`."""

    variant: str
    eval_aggregation: str
    tau: float
    vn_features: Tensor

    def pipeline_eval_input(self, batch: Any) -> tuple[Any, Context]:
        """The first layer's input for every node and the graph it runs on (``mask``: the split's nodes)."""
        mask, c, n = node_mask(batch), self.num_classes, int(batch.num_nodes)
        extras: dict[str, Any] = {"mask": mask, "num_real": n}
        if self.variant == "ff_la":  # one graph per candidate label, stacked
            h, extras["edge_index"] = label_appended(batch, c, candidates=list(range(c))), batch.edge_index
        else:
            aug = augment(batch, self.vn_features)
            h, extras["edge_index"] = aug.x, aug.edge_index
            if self.variant == "ff_vn":  # one candidate graph per class, each through every layer
                extras["class_edges"] = torch.stack([ffvn_class_edges(batch, aug, k) for k in range(c)])
                h = h.expand(c, *h.shape)
        return h, Context(y=batch.y[mask], num_classes=c, extras=extras)

    def pipeline_eval(self, p: int, h: Any, ctx: Context, stage: Stage | None,
                      vote: bool) -> tuple[Any, Tensor | None]:
        layer = self.layers[p]
        assert isinstance(layer, GraphLayer)
        if self.variant == "ff_vn":
            h = torch.stack([layer(g, edges) for g, edges in zip(h, ctx["class_edges"], strict=True)])
        else:
            h = layer.infer(h, ctx)
        if not vote:
            return h, None
        n, mask = int(ctx["num_real"]), ctx["mask"]
        if self.variant == "sf":
            return h, torch.softmax(sf_logits(h, n, self.tau), 1)[mask]
        return h, goodness(h[:, :n]).T[mask]  # (nodes, C): goodness per candidate class

    def pipeline_votes(self, stage: Stage | None) -> tuple[int, ...]:
        """A greedy unit's own layer; else the last layer or all of them (``eval_aggregation``)."""
        if stage is not None and self.schedule_mode == "greedy" and len(stage.layers) == 1:
            return stage.layers
        n = len(self.layers)
        return (n - 1,) if self.eval_aggregation == "last" else tuple(range(n))

    def pipeline_scores(self, total: Tensor, stage: Stage | None) -> Tensor:
        """SF: ``log`` of the mean probability over the voting layers; FF: the goodness sum."""
        if self.variant != "sf":
            return total
        return torch.log((total / len(self.pipeline_votes(stage))).clamp_min(1e-12))
