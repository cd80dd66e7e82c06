"""The Mono-Forward layer as one op: ReLU layer, projection to class scores, CE and local gradients.

Gong, Li & Abdulla, *Mono-Forward*, arXiv 2501.09238 (docs/learners/mono_forward.md#equations): a = ReLU(x Wᵀ + b),
G = a Mᵀ, L = CE(G, y), and the input is detached, so L reaches only W, b and M::

    dG = (softmax(G) − Y)/B,  dM = dGᵀ a,  dz = (dG M) ⊙ 1(a > 0),  dW = dzᵀ x,  db = Σ_r dz_r.

The Triton path reuses the fused linear–cross-entropy head (``linear_cross_entropy``: its Triton
row kernel turns a chunk of logits into the per-row loss and dG in place): one vendor GEMM (+ ReLU)
makes a, which is the layer's output anyway; then per row chunk the logits a_c Mᵀ, the CE row
kernel, dA_c = dG M, the ReLU mask and two vendor GEMMs into dM and dW. Everything is computed in
the forward; autograd keeps only dW, db and dM, and backward scales them, so no (B × D) tensor is
saved for backward and dA lives one chunk at a time.

In this file, in order: the torch reference (the CPU path and the oracle), the autograd Function
(its Triton kernel is ``linear_cross_entropy``'s) and the public op ``mono_forward_layer``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from localearn.kernels import resolve_impl
from localearn.kernels.linear_cross_entropy import MAX_CLASSES, _ce_grad_
from torch import Tensor

from localearn.errors import ConfigError


def mono_forward_layer_ref(x: Tensor, weight: Tensor, bias: Tensor | None, proj: Tensor,
                           target: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, CE(a Mᵀ, y))`` with ``a = ReLU(x Wᵀ + b)`` in plain torch (the oracle)."""
    a = F.relu(F.linear(x.flatten(1), weight, bias))
    return a, F.cross_entropy(F.linear(a, proj), target)


class MonoForwardLayerFunction(torch.autograd.Function):
    """Forward computes a, the loss and dW, db, dM; backward only scales them."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, proj: Tensor, target: Tensor,
                chunk: int) -> tuple[Tensor, Tensor]:
        rows = x.shape[0]
        a = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
        a.relu_()  # the output: the next layer's input
        loss_rows = torch.empty(rows, dtype=torch.float32, device=x.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=x.device) if bias is not None else None
        grad_m = torch.zeros(proj.shape, dtype=torch.float32, device=x.device)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            ac = a[start:stop]
            logits = (ac @ proj.t()).float().contiguous()
            _ce_grad_(logits, target[start:stop], loss_rows[start:stop], 1.0 / rows)  # logits ← dG
            dg = logits.to(x.dtype)
            grad_m += (dg.t() @ ac).float()
            dz = dg @ proj
            dz.masked_fill_(ac <= 0, 0.0)
            grad_w += (dz.t() @ x[start:stop]).float()
            if grad_b is not None:
                grad_b += dz.sum(0).float()
        ctx.mark_non_differentiable(a)
        ctx.save_for_backward(grad_w.to(weight.dtype), grad_m.to(proj.dtype),
                              grad_b.to(bias.dtype) if grad_b is not None and bias is not None else None)
        return a, loss_rows.sum() / rows

    @staticmethod
    def backward(ctx: Any, grad_a: Tensor, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grad_w, grad_m, grad_b = ctx.saved_tensors
        return (None, grad_w * grad_loss if ctx.needs_input_grad[1] else None,
                grad_b * grad_loss if grad_b is not None and ctx.needs_input_grad[2] else None,
                grad_m * grad_loss if ctx.needs_input_grad[3] else None, None, None)


def mono_forward_layer(x: Tensor, weight: Tensor, bias: Tensor | None, proj: Tensor, target: Tensor, *,
                       impl: str = "auto", chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """One Mono-Forward layer step: ``(a, loss)`` (see the module docstring).

    Args:
        x: (B, K) inputs (flattened), detached: no dL/dx is given. weight: (D, K). bias: (D,) or None.
        proj: M, (C, D). target: (B,) int64 labels.
        impl: ``auto`` (Triton on CUDA, torch otherwise), ``torch`` or ``triton``.
        chunk: rows per fused chunk (Triton path).

    Raises:
        ConfigError: on mismatched shapes or a forced Triton that cannot run here.
    """
    x = x.flatten(1)
    if weight.dim() != 2 or proj.dim() != 2 or x.shape[1] != weight.shape[1] or proj.shape[1] != weight.shape[0]:
        raise ConfigError(f"mono_forward_layer needs x (B, K), weight (D, K), proj (C, D); got {tuple(x.shape)}, "
                          f"{tuple(weight.shape)}, {tuple(proj.shape)}")
    if target.shape != (x.shape[0],):
        raise ConfigError(f"target must have shape ({x.shape[0]},), got {tuple(target.shape)}")
    if resolve_impl(impl, x, weight) == "torch":
        return mono_forward_layer_ref(x, weight, bias, proj, target)
    if x.requires_grad:
        raise ConfigError("mono_forward_layer's Triton path gives no gradient for x: pass a detached input")
    if proj.shape[0] > MAX_CLASSES:
        raise ConfigError(f"the Triton path takes at most {MAX_CLASSES} classes, got {proj.shape[0]}")
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, got {chunk}")
    a, loss = MonoForwardLayerFunction.apply(x.contiguous(), weight, bias, proj, target.contiguous(), int(chunk))
    return a, loss
