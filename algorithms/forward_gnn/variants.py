"""Graph inputs of the ForwardGNN variants: virtual nodes, appended labels, label matrices.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(docs/learners/forward_gnn.md#equations).

Virtual-node augmentation adds one node per class after the N real nodes (rows N..N+C−1), with
fixed N(0,1) features, and links every **training** node to its class's node in both directions.
Validation and test nodes are never linked to their own class: that keeps the labels of evaluated
nodes out of the graph. (FF-VN's inference links every non-training node to each *candidate*
class in turn, one graph per class, which uses no label.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Augmented:
    """A graph with its class virtual nodes appended.

    Attributes:
        x: ``(N + C, F)`` features (real rows, then the virtual rows).
        edge_index: the real edges plus the virtual ones.
        train_idx: indices of the training nodes; train_y: their labels.
        num_real: N.
    """

    x: Tensor
    edge_index: Tensor
    train_idx: Tensor
    train_y: Tensor
    num_real: int


def virtual_edges(nodes: Tensor, classes: Tensor, num_real: int) -> Tensor:
    """Edges node ↔ virtual node ``num_real + class``, both directions, ``(2, 2·len(nodes))``."""
    vn = num_real + classes
    return torch.cat([torch.stack([nodes, vn]), torch.stack([vn, nodes])], 1)


def augment(batch: Any, vn_features: Tensor) -> Augmented:
    """Append the virtual nodes and link the training nodes (only them) to their class node."""
    n = int(batch.num_nodes)
    train_idx = batch.train_mask.nonzero().flatten()
    train_y = batch.y[train_idx]
    edges = torch.cat([batch.edge_index, virtual_edges(train_idx, train_y, n)], 1)
    x = torch.cat([batch.x, vn_features.to(batch.x)], 0)
    return Augmented(x, edges, train_idx, train_y, n)


def ffvn_negative_edges(batch: Any, aug: Augmented, num_classes: int) -> list[Tensor]:
    """FF-VN negative graphs: graph j (1..C−1) links each training node to class ``(y + j) mod C``."""
    return [
        torch.cat([batch.edge_index, virtual_edges(aug.train_idx, (aug.train_y + j) % num_classes, aug.num_real)], 1)
        for j in range(1, num_classes)
    ]


def ffvn_class_edges(batch: Any, aug: Augmented, c: int) -> Tensor:
    """FF-VN inference graph for candidate class ``c``: training nodes keep their own class node,
    every other real node is linked to virtual node ``c``."""
    others = (~batch.train_mask).nonzero().flatten()
    cand = torch.full_like(others, c)
    return torch.cat([aug.edge_index, virtual_edges(others, cand, aug.num_real)], 1)


def label_appended(batch: Any, num_classes: int, shifts: list[int] | None = None,
                   candidates: list[int] | None = None) -> Tensor:
    """FF-LA inputs, one graph per row of the result ``(G, N, F + C)``.

    Training nodes append ``one-hot((y + shift) mod C)`` (shift 0: the positive graph); the other
    nodes append ``1/C`` during training, or the candidate class ``c`` at inference.
    """
    x, y, train = batch.x, batch.y, batch.train_mask
    graphs = []
    for k in range(len(shifts) if shifts is not None else len(candidates or [])):
        lab = torch.full((x.shape[0], num_classes), 1.0 / num_classes, dtype=x.dtype, device=x.device)
        shift = shifts[k] if shifts is not None else 0
        lab[train] = torch.nn.functional.one_hot((y[train] + shift) % num_classes, num_classes).to(x)
        if candidates is not None:
            lab[~train] = 0.0
            lab[~train, candidates[k]] = 1.0
        graphs.append(torch.cat([x, lab], 1))
    return torch.stack(graphs)


def label_matrix(batch: Any, num_classes: int) -> Tensor:
    """Top2Input's upper input of the top layer, ``(N + C, C)``: one-hot rows for training and
    virtual nodes, uniform rows for every other node."""
    n = int(batch.num_nodes)
    x = batch.x
    lab = torch.full((n + num_classes, num_classes), 1.0 / num_classes, dtype=x.dtype, device=x.device)
    train = batch.train_mask.nonzero().flatten()
    lab[train] = torch.nn.functional.one_hot(batch.y[train], num_classes).to(x)
    lab[n:] = torch.eye(num_classes, dtype=x.dtype, device=x.device)
    return lab
