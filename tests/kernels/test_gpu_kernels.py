"""docs/guides/kernels.md#error-rule on a GPU: a kernel's error against a high-precision reference is at most
twice plain torch's error in the same dtype (fp32, bf16, fp16). The reference is float64, so that
the fp32 case compares two non-zero errors. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from localearn.kernels import triton_available
from localearn.kernels.ff_layer import ff_layer, ff_layer_ref
from localearn.kernels.mono_forward_layer import mono_forward_layer, mono_forward_layer_ref
from torch import Tensor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and Triton"),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _err(got: Tensor, ref: Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _check(kernel: list[Tensor], torch_: list[Tensor], ref: list[Tensor], names: list[str]) -> None:
    for k, t, r, name in zip(kernel, torch_, ref, names, strict=True):
        ek, et = _err(k, r), _err(t, r)
        assert ek <= 2 * et + 1e-6, f"{name}: kernel error {ek:.3e} > 2 x torch error {et:.3e}"


def _leaves(*tensors: Tensor | None, dtype: torch.dtype) -> list[Tensor | None]:
    return [t.detach().to(dtype).requires_grad_() if t is not None else None for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "straight"), [("sum", True), ("mean", False)])
def test_ff_layer_error_rule(dtype: torch.dtype, mode: str, straight: bool) -> None:
    torch.manual_seed(0)
    r, k, n = 1024, 784, 1000
    x = torch.randn(r, k, device="cuda", dtype=torch.float64)
    w0 = torch.randn(n, k, device="cuda", dtype=torch.float64) / n**0.5
    b0 = torch.randn(n, device="cuda", dtype=torch.float64) * 0.1
    pos = torch.arange(r, device="cuda") < r // 2
    theta = float(n) if mode == "sum" else 1.0
    running = torch.full((n,), 0.5, device="cuda")
    kw = dict(goodness=mode, straight_through=straight, peer_norm=0.03, peer_momentum=0.9)
    out = {}
    for name, dt, impl in [("ref", torch.float64, "torch"), ("torch", dtype, "torch"), ("kernel", dtype, "triton")]:
        w, b = _leaves(w0, b0, dtype=dt)
        assert w is not None and b is not None
        h, loss, _ = ff_layer(x.to(dt), w, b, pos, theta, impl=impl, running_mean=running.to(dt), **kw)
        gw, gb = torch.autograd.grad(loss, [w, b])
        out[name] = [h.detach(), loss.detach(), gw, gb]
    _check(out["kernel"], out["torch"], out["ref"], ["h", "loss", "dW", "db"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mono_forward_layer_error_rule(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    bsz, k, d, c = 1024, 784, 1000, 10
    x = torch.randn(bsz, k, device="cuda", dtype=torch.float64)
    w0 = torch.randn(d, k, device="cuda", dtype=torch.float64) / k**0.5
    b0 = torch.randn(d, device="cuda", dtype=torch.float64) * 0.1
    m0 = torch.randn(c, d, device="cuda", dtype=torch.float64) / d**0.5
    y = torch.randint(0, c, (bsz,), device="cuda")
    out = {}
    for name, dt, impl in [("ref", torch.float64, "torch"), ("torch", dtype, "torch"), ("kernel", dtype, "triton")]:
        w, b, m = _leaves(w0, b0, m0, dtype=dt)
        assert w is not None and b is not None and m is not None
        a, loss = mono_forward_layer(x.to(dt), w, b, m, y, impl=impl)
        out[name] = [a.detach(), loss.detach(), *torch.autograd.grad(loss, [w, b, m])]
    _check(out["kernel"], out["torch"], out["ref"], ["a", "loss", "dW", "db", "dM"])


def test_reference_matches_on_cuda() -> None:
    """The reference itself runs on CUDA (the oracle the kernel is held to)."""
    x = torch.randn(8, 5, device="cuda")
    w = torch.randn(3, 5, device="cuda")
    h, loss, _ = ff_layer_ref(x, w, None, torch.arange(8, device="cuda") < 4, 3.0)
    assert h.shape == (8, 3) and torch.isfinite(loss)
    a, loss2 = mono_forward_layer_ref(x, w, None, torch.randn(2, 3, device="cuda"), torch.zeros(8, dtype=torch.long,
                                                                                                 device="cuda"))
    assert a.shape == (8, 3) and torch.isfinite(loss2)
