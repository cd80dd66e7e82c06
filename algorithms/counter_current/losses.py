"""CCL pair losses (docs/learners/counter_current.md#equations), as released in IandRover/CCL-NeurIPS24
``utils/loss.py``.

Every function takes a forward batch ``A`` (N rows: samples) and a feedback batch ``B`` (C rows:
class prototypes, or N rows in autoencoder mode); both are flattened per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-8  # the reference's normalisation epsilon


def _rows(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _masked(a: Tensor, mask: Tensor | None) -> Tensor:
    # filter_target zeroes whole samples *before* any normalisation, as the reference does
    return a if mask is None else a * mask.view(-1, *([1] * (a.dim() - 1)))


def dot_alignment_loss(a: Tensor, b: Tensor, y_onehot: Tensor, s_c: float = 0.5, mask: Tensor | None = None) -> Tensor:
    """MLP pair loss ``(256·s_C/d)·mean((A Bᵀ − Y)²)``, ``d`` the width of the pair.

    Args:
        a: forward activations (N, ...); b: feedback prototypes (C, ...) of the same width.
        y_onehot: (N, C) one-hot labels (row i of Y is sample i's class).
        s_c: the alignment scale (0.5 in every MLP recipe).
        mask: optional (N,) 0/1 weights (``filter_target``).
    """
    a2, b2 = _rows(_masked(a, mask)), _rows(b)
    return (256.0 * s_c / a2.shape[1]) * F.mse_loss(a2 @ b2.T, y_onehot)


def cosine_alignment_loss(
    a: Tensor,
    b: Tensor,
    y_onehot: Tensor,
    s_c: float = 0.5,
    s_ssl: float = 0.5,
    mask: Tensor | None = None,
) -> Tensor:
    """CNN pair loss: cosine alignment plus decorrelation of each side.

    ``s_C·mean((ÂB̂ᵀ − Y)²) + s_ssl·mean((ÂÂᵀ − I_N)²) + s_ssl·mean((B̂B̂ᵀ − I_C)²)`` with rows
    L2-normalised (``x / (‖x‖ + 1e-8)``). The two decorrelation terms keep either network from
    collapsing all its rows onto one direction.
    """
    a2, b2 = _rows(_masked(a, mask)), _rows(b)
    a2 = a2 / (a2.norm(dim=1, keepdim=True) + _EPS)
    b2 = b2 / (b2.norm(dim=1, keepdim=True) + _EPS)
    eye_a = torch.eye(a2.shape[0], device=a2.device, dtype=a2.dtype)
    eye_b = torch.eye(b2.shape[0], device=b2.device, dtype=b2.dtype)
    return (
        s_c * F.mse_loss(a2 @ b2.T, y_onehot)
        + s_ssl * F.mse_loss(a2 @ a2.T, eye_a)
        + s_ssl * F.mse_loss(b2 @ b2.T, eye_b)
    )


def decorrelation(t: Tensor) -> Tensor:
    """``mean((T̂T̂ᵀ − I)²)`` over row-normalised rows: small when rows point apart (no collapse)."""
    t2 = _rows(t)
    t2 = t2 / (t2.norm(dim=1, keepdim=True) + _EPS)
    return F.mse_loss(t2 @ t2.T, torch.eye(t2.shape[0], device=t2.device, dtype=t2.dtype))


def reconstruction_pair_loss(a: Tensor, b: Tensor, s_c: float = 1.0, s_ssl: float = 0.5) -> Tensor:
    """Autoencoder pair loss ``s_C·mean((A − B)²) + s_ssl·(decor(A) + decor(B))``.

    Both sides carry the same N samples. The shipped ``compute_scl_loss_convautoencoder`` is the plain MSE
    (scale 1); the spatial factor H and the centred-map term of docs/learners/counter_current.md#equations
    have no meaning for an MLP. An MSE alone is minimised by features that keep almost nothing about the
    sample (any function of x can be aligned with itself), so the CNN loss's decorrelation terms are added to
    keep samples apart (``s_ssl=0`` gives the plain MSE).
    """
    loss = s_c * F.mse_loss(_rows(a), _rows(b))
    if s_ssl > 0:
        loss = loss + s_ssl * (decorrelation(a) + decorrelation(b))
    return loss


def _centred_maps(t: Tensor) -> Tensor:
    """Each (sample, channel) map minus its spatial mean, divided by its spatial L2 norm."""
    t = t - t.mean(dim=(2, 3), keepdim=True)
    return t / (t.norm(dim=(2, 3), keepdim=True) + _EPS)


def map_pair_loss(a: Tensor, b: Tensor, s_c: float = 1.0, s_d: float = 1.0) -> Tensor:
    """Conv autoencoder pair loss ``H·s_C·mean((A − B)²) + H·s_D·mean((Â − B̂)²)``.

    As in the reference's ``compute_SCL_loss_AE`` (``models_cnn_ae_legacy.py``): ``A``, ``B`` are
    (N, C, H, W) maps of the same N samples, ``Â``, ``B̂`` their per-(sample, channel) centred and
    normalised versions (:func:`_centred_maps`), which match the *pattern* of each map whatever its
    offset and scale; the factor H (map height) keeps deep, small maps from weighing less. The
    two end pairs use ``s_D = 0``.
    """
    height = a.shape[2]
    loss = height * s_c * F.mse_loss(a, b)
    if s_d > 0:
        loss = loss + height * s_d * F.mse_loss(_centred_maps(a), _centred_maps(b))
    return loss
