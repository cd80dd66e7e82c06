"""Sparsemax and the sparsemax loss (Martins & Astudillo, *From Softmax to Sparsemax*, ICML 2016,
arXiv 1602.02068), as used by CaFo's SL predictors (docs/learners/cafo.md#equations).

``sparsemax(z) = [z − τ]₊`` with ``τ = (Σ_{j≤k} z_(j) − 1) / k`` and
``k = max{k : 1 + k z_(k) > Σ_{j≤k} z_(j)}`` over the sorted scores. The loss
``−z_y + ½ Σ_{j∈S(z)} (z_j² − τ²) + ½`` is written with plain torch ops in which τ stays a
differentiable function of z on the (locally constant) support S; autograd then gives exactly
``sparsemax(z) − onehot(y)`` per row, the gradient of the paper (see the tests).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _threshold(z: Tensor) -> tuple[Tensor, Tensor]:
    """τ (B, 1) as a differentiable function of ``z`` and the support mask S (B, C)."""
    z_sorted, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cumsum = z_sorted.detach().cumsum(-1)
    in_support = 1 + k * z_sorted.detach() > cumsum
    k_z = in_support.sum(-1, keepdim=True)  # ≥ 1 always: the largest score is in S
    # Ties at the boundary are all in or all out of S (1 + k z_(k) > cumsum_k is tie-stable).
    support = z.detach() >= z_sorted.detach().gather(-1, k_z - 1)
    tau = ((z * support).sum(-1, keepdim=True) - 1) / k_z.to(z.dtype)
    return tau, support


def sparsemax(z: Tensor) -> Tensor:
    """Euclidean projection of each row of ``z`` (B, C) onto the probability simplex."""
    tau, _ = _threshold(z)
    return torch.clamp(z - tau, min=0)


def sparsemax_loss(z: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """The sparsemax loss of scores ``z`` (B, C) for integer labels ``y`` (B,).

    Args:
        z: class scores.
        y: integer labels.
        reduction: ``mean`` over the batch (as CE) or ``none`` (one value per row).
    """
    tau, support = _threshold(z)
    z_y = z.gather(-1, y.view(-1, 1)).squeeze(-1)
    quad = ((z * z - tau * tau) * support).sum(-1)
    loss = -z_y + 0.5 * quad + 0.5
    return loss.mean() if reduction == "mean" else loss
