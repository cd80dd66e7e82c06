"""The Forward-Forward layer as one op: forward, goodness, FF loss and the local W/b gradient.

Hinton, *The Forward-Forward Algorithm*, arXiv 2212.13345 (docs/learners/forward_forward.md#equations), with the loeweX
recipe's straight-through ReLU and peer normalisation. For rows r (positive and negative in one
matrix, one matmul), ι_r = 1/(rms(x_r) + ε), z = ι·(x Wᵀ) + b, h = ReLU(z), g_r = Σ_j h_rj²
(``sum``) or its mean (``mean``), logit_r = g_r + γ_r − θ, and
L = mean_r BCE(logit_r; t_r) + λ·mean_j (r̄ − r_j)² with r = m·r₀ + (1 − m)·mean_{pos rows} h.

Because the loss is terminal and the input is detached, the gradient is complete at the end of
the forward (docs/guides/kernels.md#store-or-recompute): c_r = (σ(logit_r) − t_r)/R,
dL/dh = 2c_r·h (÷N for ``mean``) plus the peer-norm column term v = λ·2(r − r̄)(1 − m)/(N·P) on
positive rows, dz = dL/dh · 1(h > 0) (or · 1 with the straight-through ReLU), dW = (ι·dz)ᵀ x and db = Σ_r
dz_r. The Triton path runs one vendor GEMM for z, one Triton row kernel (ι scale, bias, ReLU in place,
goodness, per-row loss and c), then, in row chunks, a second row kernel that writes ι·dz and a vendor GEMM
into dW. Nothing of size (B × D_out) is saved for backward (autograd keeps only dW and db; backward scales
them): h is the layer's output (the next layer's input) and dz lives one chunk at a time. Recomputing z
in backward instead would re-run the B×K×N GEMM for nothing, since h is returned anyway.

In this file, in order: the torch reference (the CPU path and the oracle), the Triton kernels,
the ``torch.autograd.Function`` and the public op ``ff_layer(..., impl="auto")``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from localearn.kernels import resolve_impl
from torch import Tensor

from localearn.errors import ConfigError

RMS_EPS = 1e-8  # loeweX and Beyond-BP
GOODNESS = ("sum", "mean")


def ff_layer_ref(x: Tensor, weight: Tensor, bias: Tensor | None, is_positive: Tensor, theta: float,
                 goodness: str = "sum", straight_through: bool = True, gamma: Tensor | None = None,
                 peer_norm: float = 0.0, running_mean: Tensor | None = None,
                 peer_momentum: float = 0.9) -> tuple[Tensor, Tensor, Tensor | None]:
    """The FF layer in plain torch (what ``FFLayer`` computed before the op existed).

    Returns:
        ``h`` (R × N), the scalar loss and the updated peer-norm running mean (None without it).
    """
    x = x.flatten(1)
    xh = x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + RMS_EPS)
    z = F.linear(xh, weight, bias)
    # Straight-through: the forward value is exactly relu(z) (z + (−z) = 0), the derivative is 1.
    h = z + (z.clamp(min=0) - z).detach() if straight_through else F.relu(z)
    sq = h.float().pow(2)  # goodness sums D values near θ = D: reduced in fp32 under bf16/fp16 autocast
    g = sq.sum(dim=1) if goodness == "sum" else sq.mean(dim=1)
    logits = g - theta
    if gamma is not None:
        logits = logits + gamma.detach()
    loss = F.binary_cross_entropy_with_logits(logits, is_positive.to(logits.dtype))
    new_mean = None
    if peer_norm > 0 and running_mean is not None:
        r = running_mean.detach() * peer_momentum + h[is_positive].float().mean(dim=0) * (1.0 - peer_momentum)
        loss = loss + peer_norm * (r.mean() - r).pow(2).mean()
        new_mean = r.detach()
    return h, loss, new_mean


def _build_kernels() -> tuple[Any, Any]:
    import triton
    import triton.language as tl

    @triton.jit
    def fwd_kernel(z_ptr, stride, iota_ptr, b_ptr, t_ptr, gamma_ptr, loss_ptr, c_ptr, n_rows, n_cols,
                   theta, g_scale, inv_r, HAS_BIAS: tl.constexpr, HAS_GAMMA: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # BLOCK_M rows per program: z ← relu(ι·z + b) in place; per-row BCE loss and c = dL/dg.
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        rmask = rows < n_rows
        mask = rmask[:, None] & (cols[None, :] < n_cols)
        ptrs = z_ptr + rows[:, None] * stride + cols[None, :]
        z = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        z = z * tl.load(iota_ptr + rows, mask=rmask, other=0.0)[:, None]
        if HAS_BIAS:
            z = z + tl.load(b_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
        h = tl.where(mask & (z > 0), z, 0.0)
        tl.store(ptrs, h.to(z_ptr.dtype.element_ty), mask=mask)
        logit = tl.sum(h * h, 1) * g_scale - theta
        if HAS_GAMMA:
            logit = logit + tl.load(gamma_ptr + rows, mask=rmask, other=0.0)
        t = tl.load(t_ptr + rows, mask=rmask, other=0.0)
        loss = tl.maximum(logit, 0.0) - logit * t + tl.log(1.0 + tl.exp(-tl.abs(logit)))
        tl.store(loss_ptr + rows, loss, mask=rmask)
        tl.store(c_ptr + rows, (tl.sigmoid(logit) - t) * inv_r, mask=rmask)

    @triton.jit
    def grad_kernel(h_ptr, h_stride, dz_ptr, dz_stride, c_ptr, iota_ptr, t_ptr, v_ptr, n_rows, n_cols,
                    g_scale, HAS_V: tl.constexpr, STRAIGHT: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # ι·dz for one chunk: dL/dh = 2c·h·g_scale (+ v on positive rows), masked by h > 0 unless
        # straight-through (2c·h is already 0 where h = 0, so only the peer term needs the mask).
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        rmask = rows < n_rows
        mask = rmask[:, None] & (cols[None, :] < n_cols)
        h = tl.load(h_ptr + rows[:, None] * h_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + rows, mask=rmask, other=0.0)
        dz = (2.0 * g_scale) * c[:, None] * h
        if HAS_V:
            v = tl.load(v_ptr + cols, mask=cols < n_cols, other=0.0)
            t = tl.load(t_ptr + rows, mask=rmask, other=0.0)
            peer = t[:, None] * v[None, :]
            if not STRAIGHT:
                peer = tl.where(h > 0, peer, 0.0)
            dz = dz + peer
        dz = dz * tl.load(iota_ptr + rows, mask=rmask, other=0.0)[:, None]
        tl.store(dz_ptr + rows[:, None] * dz_stride + cols[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)

    return fwd_kernel, grad_kernel


_KERNELS: Any = None


def _blocks(n_cols: int) -> tuple[int, int]:
    import triton

    block_n = triton.next_power_of_2(n_cols)
    return max(1, 4096 // block_n), block_n  # ≤ 4096 fp32 values per program (registers on a GPU)


class FFLayerFunction(torch.autograd.Function):
    """Forward computes h, the loss and dW/db; backward only scales them (x gets no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, gamma: Tensor | None,
                running_mean: Tensor | None, theta: float, mean_mode: bool, straight: bool, peer_norm: float,
                momentum: float, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
        global _KERNELS
        if _KERNELS is None:
            _KERNELS = _build_kernels()
        fwd, grad = _KERNELS
        rows, n = x.shape[0], weight.shape[0]
        block_m, block_n = _blocks(n)
        iota = 1.0 / (torch.linalg.vector_norm(x.float(), dim=1) / math.sqrt(x.shape[1]) + RMS_EPS)
        h = x @ weight.t()  # one GEMM over all rows, positive and negative; then h is relu(ι·z + b)
        loss_rows = torch.empty(rows, dtype=torch.float32, device=x.device)
        c = torch.empty_like(loss_rows)
        g_scale = 1.0 / n if mean_mode else 1.0
        b_arg = bias if bias is not None else h
        gamma_arg = gamma.float().contiguous() if gamma is not None else loss_rows
        grid = (triton_cdiv(rows, block_m),)
        fwd[grid](h, h.stride(0), iota, b_arg, target, gamma_arg, loss_rows, c, rows, n, float(theta), g_scale,
                  1.0 / rows, HAS_BIAS=bias is not None, HAS_GAMMA=gamma is not None, BLOCK_M=block_m, BLOCK_N=block_n)
        loss = loss_rows.sum() / rows
        v, new_mean = None, torch.empty(0, device=x.device)
        if peer_norm > 0 and running_mean is not None:
            pos = target.sum()
            r = running_mean.float() * momentum + (target @ h.float()) / pos * (1.0 - momentum)
            loss = loss + peer_norm * (r.mean() - r).pow(2).mean()
            v = (peer_norm * 2.0 * (1.0 - momentum) / (n * pos)) * (r - r.mean())
            new_mean = r.to(running_mean.dtype)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
        grad_b = torch.zeros(n, dtype=torch.float32, device=x.device) if bias is not None else None
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            hc = h[start:stop]
            dz = torch.empty_like(hc)  # ι·dz of this chunk only
            grad[(triton_cdiv(stop - start, block_m),)](
                hc, hc.stride(0), dz, dz.stride(0), c[start:], iota[start:], target[start:],
                v if v is not None else c, stop - start, n, g_scale, HAS_V=v is not None, STRAIGHT=straight,
                BLOCK_M=block_m, BLOCK_N=block_n)
            grad_w += (dz.t() @ x[start:stop]).float()
            if grad_b is not None:
                grad_b += (dz.t() @ (1.0 / iota[start:stop]).to(dz.dtype)).float()  # Σ_r dz_r = Σ_r (ι·dz)_r / ι_r
        ctx.mark_non_differentiable(h, new_mean)
        ctx.save_for_backward(grad_w.to(weight.dtype), grad_b.to(bias.dtype) if grad_b is not None and bias is not None
                              else None)
        return h, loss, new_mean

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor, grad_loss: Tensor, grad_mean: Tensor) -> tuple[Tensor | None, ...]:
        grad_w, grad_b = ctx.saved_tensors
        return (None, grad_w * grad_loss if ctx.needs_input_grad[1] else None,
                grad_b * grad_loss if grad_b is not None and ctx.needs_input_grad[2] else None,
                *([None] * 9))


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division (``triton.cdiv`` without importing Triton at module load)."""
    return -(-a // b)


def ff_layer(x: Tensor, weight: Tensor, bias: Tensor | None, is_positive: Tensor, theta: float, *,
             goodness: str = "sum", straight_through: bool = True, gamma: Tensor | None = None,
             peer_norm: float = 0.0, running_mean: Tensor | None = None, peer_momentum: float = 0.9,
             impl: str = "auto", chunk: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """One FF layer step: ``(h, loss, new_running_mean)`` (see the module docstring).

    Args:
        x: (R, K) rows (flattened), positive and negative together; detached (no dL/dx is given).
        weight: (N, K). bias: (N,) or None. is_positive: (R,) bool.
        theta: the threshold θ. goodness: ``sum`` or ``mean``. gamma: (R,) collaborative-FF offsets.
        peer_norm, running_mean, peer_momentum: the peer normalisation term (off when 0 or None).
        impl: ``auto`` (Triton on CUDA, torch otherwise), ``torch`` or ``triton``.
        chunk: rows per dW chunk on the Triton path (default: Liger's rule, ≈ R·K/N).

    Raises:
        ConfigError: on mismatched shapes, an unknown goodness, or a forced Triton that cannot run.
    """
    x = x.flatten(1)
    if weight.dim() != 2 or x.shape[1] != weight.shape[1] or is_positive.shape != (x.shape[0],):
        raise ConfigError(f"ff_layer needs x (R, K), weight (N, K), is_positive (R,); got {tuple(x.shape)}, "
                          f"{tuple(weight.shape)}, {tuple(is_positive.shape)}")
    if goodness not in GOODNESS:
        raise ConfigError(f"ff_layer goodness must be sum or mean, got {goodness!r}")
    if resolve_impl(impl, x, weight) == "torch":
        return ff_layer_ref(x, weight, bias, is_positive, theta, goodness, straight_through, gamma, peer_norm,
                            running_mean, peer_momentum)
    if x.requires_grad:
        raise ConfigError("ff_layer's Triton path gives no gradient for x: pass a detached input")
    rows, k, n = x.shape[0], x.shape[1], weight.shape[0]
    chunk = chunk or max(1, min(rows, 2 ** math.ceil(math.log2(max(1, rows * k // max(n, 1))))))
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, got {chunk}")
    h, loss, new_mean = FFLayerFunction.apply(
        x.contiguous(), weight, bias, is_positive.to(torch.float32).contiguous(), gamma, running_mean, float(theta),
        goodness == "mean", bool(straight_through), float(peer_norm), float(peer_momentum), int(chunk))
    return h, loss, (new_mean if peer_norm > 0 and running_mean is not None else None)
