"""The fused FF and Mono-Forward layer ops: Triton (interpreted on CPU) against the torch reference,
and the reference against the unfused FF formulation (ops.py) it replaced."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from localearn.algorithms.forward_forward import ops
from localearn.kernels import triton_available
from localearn.kernels.ff_layer import ff_layer, ff_layer_ref
from localearn.kernels.mono_forward_layer import mono_forward_layer, mono_forward_layer_ref

from localearn.errors import ConfigError

OPS_CHECK = textwrap.dedent(
    """
    import itertools
    import torch
    from localearn.kernels.ff_layer import ff_layer, ff_layer_ref
    from localearn.kernels.mono_forward_layer import mono_forward_layer, mono_forward_layer_ref
    torch.manual_seed(0)
    # FF: odd shapes (N not a power of 2, chunk not dividing R), both goodness modes, straight-through
    # on/off, peer norm on/off, collaborative gamma on/off, bias on/off, mixed positive/negative rows.
    shapes = [(37, 50, 70, 16, True), (12, 9, 5, None, False)]
    for (r, k, n, chunk, bias), mode, st, peer, gam in itertools.product(
            shapes, ["sum", "mean"], [True, False], [0.0, 0.03], [False, True]):
        x = torch.randn(r, k)
        w = (torch.randn(n, k) / n ** 0.5).requires_grad_()
        b = (torch.randn(n) * 0.1).requires_grad_() if bias else None
        pos = torch.arange(r) % 3 != 1
        gamma = torch.randn(r) if gam else None
        rm = torch.rand(n)
        theta = n * 0.3 if mode == "sum" else 0.3
        params = [w] + ([b] if bias else [])
        kw = dict(goodness=mode, straight_through=st, gamma=gamma, peer_norm=peer, running_mean=rm)
        h1, l1, m1 = ff_layer(x, w, b, pos, theta, impl="triton", chunk=chunk, **kw)
        g1 = torch.autograd.grad(l1 * 2.5, params)
        h2, l2, m2 = ff_layer_ref(x, w, b, pos, theta, **kw)
        g2 = torch.autograd.grad(l2 * 2.5, params)
        torch.testing.assert_close(h1, h2.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
        for a, c in zip(g1, g2):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
        assert (m1 is None) == (m2 is None) == (peer == 0)
        if m1 is not None:
            torch.testing.assert_close(m1, m2)
    # Mono-Forward: ragged chunks, C not a power of 2, with and without bias.
    for b_, k, d, c, chunk, bias in [(37, 50, 70, 10, 16, True), (37, 50, 70, 3, 100, False), (5, 7, 9, 130, 2, True)]:
        x = torch.randn(b_, k)
        w = (torch.randn(d, k) / k ** 0.5).requires_grad_()
        b = (torch.randn(d) * 0.1).requires_grad_() if bias else None
        m = (torch.randn(c, d) / d ** 0.5).requires_grad_()
        y = torch.randint(0, c, (b_,))
        params = [w, m] + ([b] if bias else [])
        a1, l1 = mono_forward_layer(x, w, b, m, y, impl="triton", chunk=chunk)
        g1 = torch.autograd.grad(l1 * 1.7, params)
        a2, l2 = mono_forward_layer_ref(x, w, b, m, y)
        g2 = torch.autograd.grad(l2 * 1.7, params)
        torch.testing.assert_close(a1, a2.detach())
        torch.testing.assert_close(l1, l2)
        for p, q in zip(g1, g2):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # Nothing activation-sized is saved for backward on the Triton path: only dW, db (and dM).
    from localearn.measure import SavedTensorMeter
    r, k, n, c = 64, 40, 48, 10
    x, w, b = torch.randn(r, k), torch.randn(n, k, requires_grad=True), torch.zeros(n, requires_grad=True)
    m, y = torch.randn(c, n, requires_grad=True), torch.randint(0, c, (r,))
    with SavedTensorMeter(exclude=[w, b, m]) as meter:
        ff_layer(x, w, b, torch.arange(r) < r // 2, 1.0, impl="triton")[1].backward()
    assert meter.peak_bytes == (n * k + n) * 4, meter.peak_bytes
    with SavedTensorMeter(exclude=[w, b, m]) as meter:
        mono_forward_layer(x, w, b, m, y, impl="triton")[1].backward()
    assert meter.peak_bytes == (n * k + n + c * n) * 4, meter.peak_bytes
    print("ok")
    """
)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_layer_ops_match_reference_under_the_interpreter() -> None:
    """Output, loss, peer-norm mean and every parameter gradient of both ops, fp32, odd shapes."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # must be set before triton is imported
    env.pop("LOCALEARN_KERNELS", None)
    res = subprocess.run([sys.executable, "-c", OPS_CHECK], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


@pytest.mark.parametrize("straight_through", [True, False])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_ff_reference_is_the_unfused_layer_loss(mode: str, straight_through: bool) -> None:
    """ff_layer_ref = rms → linear → ReLU → goodness → BCE (+γ) + peer norm, as FFLayer computed it."""
    torch.manual_seed(3)
    x, pos, gamma = torch.randn(10, 7), torch.arange(10) < 5, torch.randn(10)
    w1 = torch.randn(6, 7, requires_grad=True)
    b1 = torch.randn(6, requires_grad=True)
    w2, b2 = w1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    running, theta = torch.full((6,), 0.5), 4.0 if mode == "sum" else 0.7
    h, loss, r = ff_layer_ref(x, w1, b1, pos, theta, mode, straight_through, gamma, 0.03, running, 0.9)
    h_old = ops.relu(torch.nn.functional.linear(ops.rms_normalise(x), w2, b2), straight_through)
    pn, r_old = ops.peer_norm_loss(h_old[pos], running, 0.9)
    old = ops.ff_loss(ops.goodness(h_old, mode), pos, theta, gamma) + 0.03 * pn
    torch.testing.assert_close(h, h_old)
    torch.testing.assert_close(loss, old)
    assert r is not None
    torch.testing.assert_close(r, r_old)
    for a, b in zip(torch.autograd.grad(loss, [w1, b1]), torch.autograd.grad(old, [w2, b2]), strict=True):
        torch.testing.assert_close(a, b)


def test_mono_forward_reference_is_relu_linear_ce() -> None:
    torch.manual_seed(4)
    x, w, b, m = torch.randn(8, 5), torch.randn(6, 5), torch.randn(6), torch.randn(3, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    a, loss = mono_forward_layer_ref(x, w, b, m, y)
    a_exp = (x @ w.T + b).clamp(min=0)
    torch.testing.assert_close(a, a_exp)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(a_exp @ m.T, y))


def test_bad_input_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w, pos = torch.randn(4, 5), torch.randn(3, 5), torch.ones(4, dtype=torch.bool)
    with pytest.raises(ConfigError, match="goodness must be sum or mean"):
        ff_layer(x, w, None, pos, 1.0, goodness="max")
    with pytest.raises(ConfigError, match=r"x \(R, K\), weight \(N, K\)"):
        ff_layer(x, torch.randn(3, 6), None, pos, 1.0)
    with pytest.raises(ConfigError, match=r"proj \(C, D\)"):
        mono_forward_layer(x, w, None, torch.randn(2, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="impl='triton' cannot run here"):
        ff_layer(x, w, None, pos, 1.0, impl="triton")
