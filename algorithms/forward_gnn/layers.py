"""ForwardGNN layers and their local losses.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004.

A layer is ``h = ReLU(Conv(n(sg(x)), edges))`` (docs/learners/forward_gnn.md#equations) with ``n`` the row-wise L2
normalisation ``x / (‖x‖₂ + 1e-8)`` and ``Conv`` one of GCN, SAGE (mean aggregation) or GAT (4 heads
of width W/4, concatenated). The graph's edges are not part of the layer input tensor, so
:meth:`GraphLayer.infer` reads them from the context (the learner's base chain uses it for the
frozen prefix, and :meth:`GraphLayer.forward_loss` for its own step; FF-VN's negative graphs are
the only other reason to override ``forward_loss``), and
:meth:`~localearn.layer.LocalLayer.train_step` (detach, own optimizer, memory scope) still drives
every update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer

EPS = 1e-8
LOSSES = ("sf", "top2loss", "ff_la", "ff_vn")


def row_normalise(x: Tensor) -> Tensor:
    """``n(x) = x / (‖x‖₂ + ε)`` row-wise, ε = 1e-8 (not LayerNorm, not ``F.normalize``)."""
    return x / (x.norm(dim=-1, keepdim=True) + EPS)


def make_conv(kind: str, in_dim: int, out_dim: int, heads: int = 4) -> nn.Module:
    """The message-passing operator of one layer: ``gcn``, ``sage`` (mean) or ``gat``."""
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    if kind == "gcn":
        return GCNConv(in_dim, out_dim)
    if kind == "sage":
        return SAGEConv(in_dim, out_dim, aggr="mean")
    if kind == "gat":
        if out_dim % heads:
            raise ConfigError(f"gat width {out_dim} is not divisible by its {heads} heads")
        return GATConv(in_dim, out_dim // heads, heads=heads, concat=True)
    raise ConfigError(f"unknown graph convolution {kind!r}; valid: gcn, sage, gat")


def sf_logits(h: Tensor, num_real: int, tau: float = 1.0) -> Tensor:
    """Virtual-node logits ``⟨h_v, c_k⟩ / τ`` of every real node v against the C virtual rows."""
    return h[:num_real] @ h[num_real:].T / tau


def sf_loss(h: Tensor, ctx: Context) -> Tensor:
    """SF loss: CE over the training nodes of their virtual-node logits (docs/learners/forward_gnn.md#variants)."""
    idx = ctx["train_idx"]
    logits = h[idx] @ h[ctx["num_real"] :].T / ctx.get("tau", 1.0)
    return F.cross_entropy(logits, ctx["train_y"])


def goodness(h: Tensor) -> Tensor:
    """FF goodness ``Σ_j h_j²`` per node (last dimension)."""
    return h.pow(2).sum(-1)


def ff_loss(pos: Tensor, negs: Tensor, theta: float) -> Tensor:
    """``BCE(σ(G⁺ − θ), 1) + mean over negative graphs of BCE(σ(G⁻ − θ), 0)``.

    Args:
        pos: goodness of the training nodes in the positive graph, ``(M,)``.
        negs: their goodness in each negative graph, ``(C − 1, M)``.
        theta: the threshold θ.
    """
    # softplus(-z) = -log σ(z): the numerically stable BCE with logits
    return F.softplus(theta - pos).mean() + F.softplus(negs - theta).mean()


class GraphLayer(LocalLayer):
    """One ForwardGNN layer: ``ReLU(Conv(n(x), edges))`` plus its variant's local loss.

    Args:
        kind: ``gcn`` | ``sage`` | ``gat``.
        in_dim, out_dim: widths.
        loss: ``sf`` | ``top2loss`` | ``ff_la`` | ``ff_vn`` (what :meth:`local_loss` computes).
        split: for Top2Input, the width of the lower input; the lower and upper parts are
            normalised separately (``n(h⁽ˡ⁻¹⁾) ⊕ n(h⁽ˡ⁺¹⁾)``). None normalises the whole row.
        theta: FF threshold θ.
    """

    def __init__(self, kind: str, in_dim: int, out_dim: int, loss: str = "sf",
                 split: int | None = None, theta: float = 2.0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown ForwardGNN layer loss {loss!r}; valid: {', '.join(LOSSES)}")
        self.conv = make_conv(kind, in_dim, out_dim)
        self.loss_kind = loss
        self.split = split
        self.theta = theta

    def normalise(self, x: Tensor) -> Tensor:
        if self.split is None:
            return row_normalise(x)
        return torch.cat([row_normalise(x[..., : self.split]), row_normalise(x[..., self.split :])], -1)

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        """``(N, F) → (N, D)``; a stack of graphs ``(G, N, F) → (G, N, D)`` shares the edges."""
        if edge_index is None:
            raise ConfigError(f"{self.layer_name} is a graph layer: call it as layer(x, edge_index)")
        if x.dim() == 3:  # FF-LA: one graph pass per appended label
            return torch.stack([self(g, edge_index) for g in x])
        return F.relu(self.conv(self.normalise(x), edge_index))

    def infer(self, x: Tensor, ctx: Context) -> Tensor:
        # The edges live in the context, not in the input tensor (see the module docstring).
        return self(x, ctx["edge_index"])

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        h = self.infer(x, ctx)
        if self.loss_kind == "ff_vn":
            # Negative graphs: the same inputs, edges to a wrong class's virtual node.
            idx = ctx["train_idx"]
            negs = torch.stack([goodness(self(x, ei)[idx]) for ei in ctx["neg_edge_indices"]])
            return h, ff_loss(goodness(h[idx]), negs, self.theta)
        return h, self.local_loss(h, ctx)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        if self.loss_kind == "sf":
            return sf_loss(h, ctx)
        if self.loss_kind == "top2loss":
            # The mean of this layer's new output and the detached previous-step states above it.
            upper = ctx["upper_states"].get(self.layer_name, [])
            return sf_loss(torch.stack([h, *upper]).mean(0), ctx)
        if self.loss_kind == "ff_la":
            g = goodness(h[:, ctx["train_idx"]])  # (C, M): graph 0 positive, the rest negative
            return ff_loss(g[0], g[1:], self.theta)
        raise ConfigError(f"{self.loss_kind} computes its loss in forward_loss")
