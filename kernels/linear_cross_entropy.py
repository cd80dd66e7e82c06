"""Fused linear projection + cross-entropy, with its gradients computed in the forward pass.

The projection head of Mono-Forward (G_i = a_i M_iᵀ, loss CE(G_i, y); Gong, Li & Abdulla,
arXiv 2501.09238), CaFo's predictors and ForwardGNN's virtual-node logits all end in a linear map
followed by cross-entropy. Liger-Kernel's fused linear cross-entropy (Hsu et al., arXiv
2410.10989) shows the pattern: process the rows in chunks, turn each chunk's logits into
``dL/dlogits`` in place with one Triton kernel, and accumulate the input and weight gradients
right away, so the full (B × C) logits are never stored and nothing activation-sized waits for
backward except ``dL/dx``.

In this file, in order: the torch reference (the CPU path and the test oracle), the Triton kernel,
the ``torch.autograd.Function``, and the public op with ``impl="auto"`` (see
``localearn.kernels.resolve_impl``). Its row kernel also serves ``mono_forward_layer``, the fused
Mono-Forward layer step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from localearn.kernels import resolve_impl
from torch import Tensor

from localearn.errors import ConfigError

MAX_CLASSES = 65536  # one row of logits must fit one Triton block


def linear_cross_entropy_ref(x: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``x Wᵀ + b`` (plain torch; the oracle)."""
    return F.cross_entropy(F.linear(x, weight, bias).float(), target)


def _build_kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def ce_grad_kernel(logits_ptr, stride, target_ptr, loss_ptr, n_rows, n_cols, inv_n,
                       BLOCK_M: tl.constexpr, BLOCK: tl.constexpr):
        # BLOCK_M rows per program: loss = logsumexp(z) − z_y; z is overwritten by (softmax − onehot)/N.
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK)
        rmask = rows < n_rows
        mask = rmask[:, None] & (cols[None, :] < n_cols)
        ptrs = logits_ptr + rows[:, None] * stride + cols[None, :]
        z = tl.load(ptrs, mask=mask, other=-float("inf")).to(tl.float32)
        z = tl.where(rmask[:, None], z, 0.0)  # rows past the end: finite, never stored
        m = tl.max(z, 1)
        e = tl.exp(z - m[:, None])
        s = tl.sum(e, 1)
        y = tl.load(target_ptr + rows, mask=rmask, other=0)
        is_y = cols[None, :] == y[:, None]
        zy = tl.sum(tl.where(is_y, z, 0.0), 1)
        tl.store(loss_ptr + rows, tl.log(s) + m - zy, mask=rmask)
        grad = (e / s[:, None] - tl.where(is_y, 1.0, 0.0)) * inv_n
        tl.store(ptrs, grad, mask=mask)

    return ce_grad_kernel


_KERNEL: Any = None


def _ce_grad_(logits: Tensor, target: Tensor, loss_rows: Tensor, inv_n: float) -> None:
    """Row-wise loss into ``loss_rows``; ``logits`` (float32, contiguous) becomes dL/dlogits."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build_kernel()
    import triton

    rows, cols = logits.shape
    block = triton.next_power_of_2(cols)
    block_m = max(1, 4096 // block)  # ≤ 4096 fp32 values per program (registers on a GPU)
    _KERNEL[(triton.cdiv(rows, block_m),)](logits, logits.stride(0), target, loss_rows, rows, cols, inv_n,
                                          BLOCK_M=block_m, BLOCK=block)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Forward computes the loss and every gradient; backward only scales them."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk: int) -> Tensor:
        n = x.shape[0]
        loss_rows = torch.empty(n, dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=x.device) if bias is not None else None
        target = target.contiguous()
        for start in range(0, n, chunk):
            xc = x[start : start + chunk]
            logits = F.linear(xc, weight, bias).float().contiguous()
            _ce_grad_(logits, target[start : start + chunk], loss_rows[start : start + chunk], 1.0 / n)
            grad_x[start : start + chunk] = (logits.to(x.dtype) @ weight).to(x.dtype)
            grad_w += logits.t() @ xc.float()
            if grad_b is not None:
                grad_b += logits.sum(0)
        ctx.has_bias = bias is not None
        grad_b_out = grad_b.to(bias.dtype) if grad_b is not None and bias is not None else None
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype), grad_b_out)
        return loss_rows.sum() / n

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_x, grad_w, grad_b = ctx.saved_tensors
        return (
            grad_x * grad_out if ctx.needs_input_grad[0] else None,
            grad_w * grad_out if ctx.needs_input_grad[1] else None,
            grad_b * grad_out if ctx.has_bias and ctx.needs_input_grad[2] else None,
            None,
            None,
        )


def linear_cross_entropy(
    x: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None, *, impl: str = "auto", chunk: int = 1024
) -> Tensor:
    """Mean cross-entropy of ``x Wᵀ + b`` against integer ``target``.

    Args:
        x: (N, D) inputs. weight: (C, D). target: (N,) int64. bias: (C,) or None.
        impl: ``auto`` (Triton on CUDA, torch otherwise), ``torch`` or ``triton``.
        chunk: rows per fused chunk (Triton path).

    Raises:
        ConfigError: on mismatched shapes, or a forced Triton that cannot run here.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ConfigError(f"linear_cross_entropy needs x (N, D) and weight (C, D); got {tuple(x.shape)} and "
                          f"{tuple(weight.shape)}")
    if target.shape != (x.shape[0],):
        raise ConfigError(f"target must have shape ({x.shape[0]},), got {tuple(target.shape)}")
    if resolve_impl(impl, x, weight) == "torch":
        return linear_cross_entropy_ref(x, weight, target, bias)
    if weight.shape[0] > MAX_CLASSES:
        raise ConfigError(f"the Triton path takes at most {MAX_CLASSES} classes, got {weight.shape[0]}")
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, got {chunk}")
    return LinearCrossEntropyFunction.apply(x, weight, bias, target, int(chunk))
