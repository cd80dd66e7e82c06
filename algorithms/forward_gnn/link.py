"""ForwardGNN link prediction, with its own small training loop.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(ALGORITHMS.md §5.2, last row; §5.3 for the split).

The edges are split by ``RandomLinkSplit(num_val=0.16, num_test=0.2, neg_sampling_ratio=1.0)``
with training negatives drawn once (fixed 1:1). Every layer is the node-classification layer
``ReLU(Conv(n(sg(x)), E_train))``, message passing over the training positive edges only, with a
per-layer edge objective:

* ``dot`` (the single-forward / CE objective): ``s(u, v) = Σ_j z_uj z_vj``, BCE with the edge label;
* ``ff``: goodness ``s(u, v) = Σ_j (z_u ⊙ z_v)_j² − θ`` (θ = 2), BCE with the edge label.

Training is greedy: each layer trains to its own stopping point (validation ROC-AUC of its own
scores, patience in epochs), is restored to its best state and frozen. The prediction is the mean
over layers of ``σ(s)``; the metric is ROC-AUC (``sklearn.metrics.roc_auc_score``).

Why a loop of its own: :class:`~localearn.trainer.Trainer` scores classes (accuracy, CE) on node
masks, while link prediction scores edge pairs with ROC-AUC. The loop keeps the protocol's pieces
(per-unit early stopping, best-state restore, ``LocalLayer.train_step``, the saved-tensor meter per
layer) and is what the benchmark and the tests call. ``learner="backprop"`` trains the PyG
encoder of the same depth and width end to end with the ``dot`` objective, as the baseline.
The top-down link variant of the paper is not implemented.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from localearn.algorithms.forward_gnn.backprop_gnn import GNNNetwork
from localearn.algorithms.forward_gnn.layers import GraphLayer
from torch import Tensor, nn

from localearn.arch import parse_arch
from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.measure.memory import SavedTensorMeter
from localearn.utils import seed_everything

OBJECTIVES = ("dot", "ff")
LEARNERS = ("forward_gnn", "backprop")


def link_split(data: Any, seed: int = 101) -> tuple[Any, Any, Any]:
    """Train / validation / test link splits (val 0.16, test 0.2, 1:1 negatives), seeded."""
    from torch_geometric.transforms import RandomLinkSplit

    split = RandomLinkSplit(num_val=0.16, num_test=0.2, is_undirected=True,
                            add_negative_train_samples=True, neg_sampling_ratio=1.0)
    with torch.random.fork_rng():  # the split seed must not disturb the model's seed
        torch.manual_seed(seed)
        train, val, test = split(data)
    return train, val, test


def edge_scores(z: Tensor, pairs: Tensor, objective: str, theta: float = 2.0) -> Tensor:
    """Edge logits: ``Σ_j z_uj z_vj`` (dot) or ``Σ_j (z_u ⊙ z_v)_j² − θ`` (ff)."""
    prod = z[pairs[0]] * z[pairs[1]]
    return prod.sum(-1) if objective == "dot" else prod.pow(2).sum(-1) - theta


class LinkLayer(GraphLayer):
    """A ForwardGNN layer whose local loss is the BCE of its own edge scores."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, objective: str, theta: float = 2.0) -> None:
        super().__init__(kind, in_dim, out_dim, "sf", theta=theta)
        self.objective = objective

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        s = edge_scores(h, ctx["edge_label_index"], self.objective, self.theta)
        return F.binary_cross_entropy_with_logits(s, ctx["edge_label"].float())


class LinkNetwork(GNNNetwork):
    """The backprop baseline: a whole PyG encoder trained end to end on dot-product BCE."""

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        s = edge_scores(h, ctx["edge_label_index"], "dot")
        return F.binary_cross_entropy_with_logits(s, ctx["edge_label"].float())


def _auc(scores: Tensor, labels: Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.cpu().numpy(), scores.detach().cpu().numpy()))


def fit_link(
    data: Any,
    arch: str = "gcn:128x2",
    *,
    learner: str = "forward_gnn",
    objective: str = "dot",
    epochs: int = 300,
    patience: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    theta: float = 2.0,
    seed: int = 0,
    split_seed: int = 101,
) -> dict[str, Any]:
    """Train link prediction on ``data`` (a PyG ``Data``) and report ROC-AUC.

    Args:
        data: the graph (node features ``x``, ``edge_index``); labels are not used.
        arch: ``gcn:WxL`` | ``sage:WxL`` | ``gat:WxL``.
        learner: ``forward_gnn`` (greedy, per-layer objective) | ``backprop`` (end to end, dot).
        objective: ``dot`` | ``ff`` (forward_gnn only).
        epochs: cap per unit (per layer for forward_gnn); patience: epochs without a better
            validation AUC before a unit stops.
        lr, weight_decay: Adam, one optimizer per layer.
        theta: FF threshold. seed: model seed. split_seed: the edge split's seed (101·i).

    Returns:
        ``test_auc``, ``val_auc``, per-layer test AUCs, epochs per unit, peak saved bytes
        (overall and per layer) and the training seconds.
    """
    spec = parse_arch(arch)
    if not spec.is_graph:
        raise ConfigError(f"link prediction needs a graph architecture (gcn:/sage:/gat:WxL), got {arch}")
    if learner not in LEARNERS:
        raise ConfigError(f"unknown link learner {learner!r}; valid: {', '.join(LEARNERS)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown link objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    train, val, test = link_split(data, split_seed)
    seed_everything(seed)
    stack: list[LocalLayer] = []
    if learner == "backprop":  # the last convolution outputs the embedding
        net = LinkNetwork(spec.kind, int(data.num_features), spec.widths[0], spec.depth, spec.widths[-1])
        net.layer_name = "network"
        stack.append(net)
    else:
        dims = (int(data.num_features), *spec.widths)
        for i in range(spec.depth):
            link_layer = LinkLayer(spec.kind, dims[i], dims[i + 1], objective, theta)
            link_layer.layer_name = f"layer{i}"
            stack.append(link_layer)
    layers = nn.ModuleList(stack)
    for layer in stack:
        layer.optimizer = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    edges = train.edge_index  # message passing over the training positive edges only
    meter = SavedTensorMeter(list(layers.parameters()))
    obj = "dot" if learner == "backprop" else objective

    def embed(upto: int) -> list[Tensor]:
        h, out = train.x, []
        for layer in stack[: upto + 1]:
            h = layer(h, edges)
            out.append(h)
        return out

    def auc(split: Any, unit: int | None) -> float:
        with torch.no_grad():
            outs = embed(len(layers) - 1 if unit is None else unit)
            probs = [torch.sigmoid(edge_scores(z, split.edge_label_index, obj, theta)) for z in outs]
            p = probs[unit] if unit is not None else torch.stack(probs).mean(0)
        return _auc(p, split.edge_label)

    ctx = Context(y=None, num_classes=2, extras={"edge_index": edges, "edge_label_index": train.edge_label_index,
                                                 "edge_label": train.edge_label})
    units: list[dict[str, Any]] = []
    train_s = 0.0
    for i, layer in enumerate(stack):
        best, best_epoch, best_state, bad, epoch = -1.0, 0, None, 0, 0
        for epoch in range(1, epochs + 1):
            layers.train()
            t0 = time.perf_counter()
            with torch.no_grad():
                h = embed(i - 1)[-1] if i > 0 else train.x  # the frozen prefix
            with meter:
                layer.train_step(h, ctx)
            train_s += time.perf_counter() - t0
            layers.eval()
            value = auc(val, i)
            if value > best:
                best, best_epoch, bad = value, epoch, 0
                best_state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_state is not None:
            layer.load_state_dict(best_state)  # restore before the layer is frozen
        units.append({"unit": layer.layer_name, "epochs": epoch, "best_epoch": best_epoch, "best_val_auc": best})
    layers.eval()
    return {
        "learner": learner, "objective": obj, "arch": str(spec),
        "test_auc": auc(test, None), "val_auc": auc(val, None),
        "per_layer_test_auc": {layer.layer_name: auc(test, i) for i, layer in enumerate(stack)},
        "units": units, "train_seconds": train_s,
        "peak_saved_activation_bytes": meter.peak_bytes, "per_layer_peak_saved_bytes": dict(meter.per_layer),
        "split": {"num_val": 0.16, "num_test": 0.2, "neg_sampling_ratio": 1.0, "seed": split_seed},
    }
