"""ForwardGNN's chain: layer by layer, with the graph travelling in the context.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004. An SF,
FF-LA or FF-VN layer reads the previous layer's node states and the graph (edges, training nodes
and labels, virtual nodes), never a later layer, so the chain can be cut between any two layers
(:mod:`localearn.distributed.pipeline`); the graph must fit each rank, since it travels in the
layer context with every message.

Inference: each layer's vote is its per-node class scores for every real node: SF the softmax of
its virtual-node logits (averaged over the voting layers, whose log is the prediction:
``prediction_rule = "mean_prob"``), FF the goodness per candidate class (summed). FF-LA runs one
graph per candidate label, stacked; FF-VN one candidate graph per class, each through every layer.
The top-down variants (Top2Loss, Top2Input) do not train as a chain (they refuse the pipeline),
but they score layer by layer too: Top2Loss's states come from a bottom-up SF pass, Top2Input's
from ``test_steps`` recurrent steps over all layers at position 0 (softmax accumulated from step 2
on), each layer's vote read from them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from localearn.layer import Context
from localearn.learner import LocalLearner, Stage
from localearn.space import Dist, log_uniform

from . import topdown
from .layers import GraphLayer, goodness, sf_logits
from .variants import augment, ffvn_class_edges, label_appended

TOP_DOWN = ("top2loss", "top2input")
# Graph learners like larger steps (PyG's Cora recipe: Adam 1e-2, wd 5e-4).
GRAPH_SEARCH: dict[str, Dist] = {"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-5, 1e-2)}


class GraphChain(LocalLearner):
    """The inference part of :class:`~localearn.algorithms.forward_gnn.ForwardGNN`."""

    variant: str
    eval_aggregation: str
    tau: float
    vn_features: Tensor

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """The first layer's input for every node and the graph it runs on."""
        c, n = self.num_classes, int(x.num_nodes)
        extras: dict[str, Any] = {"num_real": n}
        if self.variant == "ff_la":  # one graph per candidate label, stacked
            h, extras["edge_index"] = label_appended(x, c, candidates=list(range(c))), x.edge_index
        else:
            aug = augment(x, self.vn_features)
            h, extras["edge_index"] = aug.x, aug.edge_index
            if self.variant == "ff_vn":  # one candidate graph per class, each through every layer
                extras["class_edges"] = torch.stack([ffvn_class_edges(x, aug, k) for k in range(c)])
                h = h.expand(c, *h.shape)
            if self.variant == "top2input":
                extras["graph"] = x
        return h, Context(None, c, extras)

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Layer p's node states and, if it votes, its ``(nodes, C)`` scores (see the module docstring)."""
        if self.variant == "top2input":  # the recurrent pass runs once, at the first position
            if p == 0:
                ctx.extras["probs"] = topdown.recurrent_probs(self, ctx["graph"], h, ctx["edge_index"])
            return h, ctx["probs"][p] if vote else None
        layer = self.layers[p]
        assert isinstance(layer, GraphLayer)
        if self.variant == "ff_vn":
            h = torch.stack([layer(g, edges) for g, edges in zip(h, ctx["class_edges"], strict=True)])
        else:
            h = layer.infer(h, ctx)
        if not vote:
            return h, None
        n = int(ctx["num_real"])
        if self.variant in ("ff_la", "ff_vn"):
            return h, goodness(h[:, :n]).T  # (nodes, C): goodness per candidate class
        return h, torch.softmax(sf_logits(h, n, self.tau), 1)

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """A greedy unit's own layer; else the last layer or all of them (``eval_aggregation``)."""
        n = len(self.positions())
        if stage is not None and self.schedule_mode == "greedy" and len(stage.layers) == 1:
            return stage.layers
        return (n - 1,) if self.eval_aggregation == "last" else tuple(range(n))
