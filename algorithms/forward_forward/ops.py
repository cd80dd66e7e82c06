"""Forward-Forward building blocks as plain functions (Hinton, arXiv 2212.13345; docs/learners/forward_forward.md).

Kept free of module state so the tests can compare each one with a hand computation: RMS
normalisation, goodness, the BCE-with-logits FF loss, peer normalisation, the straight-through
ReLU, label embedding, wrong-label draws and the hybrid-image masks of the unsupervised variant.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

RMS_EPS = 1e-8  # loeweX and Beyond-BP


def rms_normalise(x: Tensor, eps: float = RMS_EPS) -> Tensor:
    """``x / (sqrt(mean(x²)) + eps)`` row-wise on the flattened rows: Σx̂² = D
    (docs/learners/forward_forward.md#equations)."""
    x = x.flatten(1)
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def goodness(h: Tensor, mode: str = "sum") -> Tensor:
    """``G = Σ_j h_j²`` (``sum``) or ``mean_j h_j²`` (``mean``), one value per row, reduced in fp32
    (under bf16 autocast a sum of D squares next to θ = D would lose the margin)."""
    sq = h.flatten(1).float().pow(2)
    return sq.sum(dim=1) if mode == "sum" else sq.mean(dim=1)


def ff_loss(g: Tensor, is_positive: Tensor, theta: float, gamma: Tensor | None = None) -> Tensor:
    """``BCE-with-logits(G + γ − θ; 1 positive, 0 negative)``, averaged over all rows.

    Equals ``mean(softplus(−(G⁺ + γ − θ)) ∪ softplus(G⁻ + γ − θ))``. ``γ`` (collaborative FF) is
    detached here as well, so it can never carry gradient into another layer.
    """
    logits = g - theta
    if gamma is not None:
        logits = logits + gamma.detach()
    return F.binary_cross_entropy_with_logits(logits, is_positive.to(logits.dtype))


def peer_norm_loss(h_pos: Tensor, running: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """Peer normalisation (loeweX ``_calc_peer_normalization_loss``).

    ``r ← momentum·sg(r) + (1 − momentum)·mean_rows(h⁺)``; loss = ``mean_j (mean(r) − r_j)²``.
    The gradient flows only through the current batch mean.

    Returns:
        The loss and the updated running mean (detached), to be stored by the caller.
    """
    r = running.detach() * momentum + h_pos.flatten(1).mean(dim=0) * (1.0 - momentum)
    return (r.mean() - r).pow(2).mean(), r.detach()


class _StraightThroughReLU(torch.autograd.Function):
    """``max(0, z)`` forward, derivative 1 everywhere backward (loeweX ``ReLU_full_grad``)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def relu(z: Tensor, straight_through: bool) -> Tensor:
    """ReLU, optionally with the straight-through gradient."""
    return _StraightThroughReLU.apply(z) if straight_through else F.relu(z)


def embed_labels(x: Tensor, labels: Tensor | None, num_classes: int, value: float) -> Tensor:
    """Overwrite the first C values of each flattened row with ``value·one_hot(label)``.

    ``labels=None`` writes the neutral label ``value/C`` in all C places (one-pass inference).
    On images (C, H, W) the first C values are the first C pixels of the top row of channel 0.
    """
    out = x.flatten(1).clone()
    if labels is None:
        out[:, :num_classes] = value / num_classes
    else:
        out[:, :num_classes] = F.one_hot(labels, num_classes).to(out.dtype) * value
    return out


def first_layer_per_label(x: Tensor, weight: Tensor, bias: Tensor | None, num_classes: int,
                          value: float, eps: float = RMS_EPS) -> Tensor:
    """Layer 1's pre-activation ``W·rms(embed(x, c)) + b`` for every label c, label-major
    ``(C·B, D_1)``, with one B-row matmul instead of a C·B-row one.

    Row (c, i) is ``r = x'_i + v·e_c``: the image with its first C values zeroed, plus the label
    value v at position c. Its squared norm ``‖x'_i‖² + v²`` is the same for every c, so the RMS
    divisor ``s_i = sqrt((‖x'_i‖² + v²)/D) + ε`` is too, and
    ``W·rms(r) + b = (W x'_i)/s_i + (v/s_i)·W[:, c] + b``: the image part is computed once.
    Equal to the direct computation up to float rounding (tested).
    """
    b, c = x.shape[0], num_classes
    img = x.flatten(1).clone()
    img[:, :c] = 0.0
    scale = img.pow(2).sum(1, keepdim=True).add(value * value).div(img.shape[1]).sqrt() + eps  # (B, 1)
    base = F.linear(img, weight, bias=None) / scale  # (B, D_1)
    if bias is not None:
        base = base + bias
    # One fused pass writes the (C, B, D_1) result: base + (v/s_i)·W[:, c].
    z = torch.addcmul(base.unsqueeze(0), (value / scale).unsqueeze(0),
                      weight[:, :c].t().contiguous().unsqueeze(1))  # contiguous: 60x faster broadcast on CPU
    return z.reshape(c * b, -1)


def wrong_labels(y: Tensor, num_classes: int) -> Tensor:
    """A label uniform over the C − 1 wrong classes: ``(y + U{1..C−1}) mod C`` (never ``y``)."""
    offset = torch.randint(1, num_classes, y.shape, device=y.device)
    return (y + offset) % num_classes


def hardest_wrong_labels(y: Tensor, label_scores: Tensor) -> Tensor:
    """The most likely wrong label: argmax of ``label_scores`` (B, C) with the true class masked."""
    # NaN/inf scores become the lowest finite value, so the masked true class stays strictly last.
    masked = torch.nan_to_num(label_scores.float(), nan=-3.0e38, posinf=3.0e38, neginf=-3.0e38)
    masked[torch.arange(len(y), device=y.device), y] = float("-inf")
    return masked.argmax(dim=1)


def hybrid_masks(
    n: int, height: int, width: int, steps: int, device: torch.device | None = None
) -> Tensor:
    """Masks with large regions of ones and zeros (docs/learners/forward_forward.md#labels, unsupervised FF).

    A random bit image is blurred ``steps`` times with [¼, ½, ¼] horizontally and vertically
    (replicate padding, so borders are not pulled towards 0) and thresholded at 0.5.

    Returns:
        ``(n, 1, height, width)`` float masks of 0 and 1.
    """
    m = torch.randint(0, 2, (n, 1, height, width), device=device).float()
    k = torch.tensor([0.25, 0.5, 0.25], device=device)
    kh, kv = k.view(1, 1, 1, 3), k.view(1, 1, 3, 1)
    for _ in range(steps):
        m = F.conv2d(F.pad(m, (1, 1, 0, 0), mode="replicate"), kh)
        m = F.conv2d(F.pad(m, (0, 0, 1, 1), mode="replicate"), kv)
    return (m > 0.5).float()


def different_class_partners(y: Tensor) -> Tensor:
    """For each row an index of a row of another class (any other row if none exists)."""
    n = len(y)
    weights = (y.view(-1, 1) != y.view(1, -1)).float()
    lonely = weights.sum(dim=1) == 0  # a batch of one class: fall back to any other row
    if lonely.any():
        weights[lonely] = 1.0 - torch.eye(n, device=y.device)[lonely] if n > 1 else 1.0
    return torch.multinomial(weights, 1).squeeze(1)


def hybrid_images(x: Tensor, y: Tensor, steps: int) -> Tensor:
    """``mask·x₁ + (1 − mask)·x₂`` for x₂ an image of a different class than x₁."""
    partner = different_class_partners(y)
    mask = hybrid_masks(x.shape[0], x.shape[-2], x.shape[-1], steps, x.device)
    return mask * x + (1.0 - mask) * x[partner]
