"""The fused linear + cross-entropy op: Triton (interpreted on CPU) against the torch reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from localearn.kernels import triton_available
from localearn.kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref

from localearn.errors import ConfigError

TRITON_CHECK = textwrap.dedent(
    """
    import torch
    from localearn.kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
    torch.manual_seed(0)
    for n, d, c, chunk, bias in [(37, 64, 10, 16, True), (37, 64, 10, 16, False), (8, 5, 3, 100, True),
                                 (50, 33, 130, 7, True)]:
        x = torch.randn(n, d, requires_grad=True)
        w = torch.randn(c, d, requires_grad=True)
        b = torch.randn(c, requires_grad=True) if bias else None
        y = torch.randint(0, c, (n,))
        params = [x, w] + ([b] if bias else [])
        fused = linear_cross_entropy(x, w, y, b, impl="triton", chunk=chunk)
        g_fused = torch.autograd.grad(fused * 3.0, params)
        ref = linear_cross_entropy_ref(x, w, y, b)
        g_ref = torch.autograd.grad(ref * 3.0, params)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
        for a, r in zip(g_fused, g_ref):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
    print("ok")
    """
)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_matches_reference_under_the_interpreter() -> None:
    """Loss and all gradients (several chunkings, ragged last chunk, C not a power of 2)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # must be set before triton is imported
    res = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


def test_reference_is_mean_cross_entropy() -> None:
    torch.manual_seed(1)
    x, w, b = torch.randn(6, 4), torch.randn(3, 4), torch.randn(3)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    logits = x @ w.T + b
    expected = (torch.logsumexp(logits, 1) - logits[torch.arange(6), y]).mean()
    torch.testing.assert_close(linear_cross_entropy_ref(x, w, y, b), expected)
    torch.testing.assert_close(linear_cross_entropy(x, w, y, b), F.cross_entropy(logits, y))  # auto → torch on CPU


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ConfigError, match=r"x \(N, D\) and weight \(C, D\)"):
        linear_cross_entropy(torch.randn(4, 5), torch.randn(3, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"target must have shape \(4,\)"):
        linear_cross_entropy(torch.randn(4, 5), torch.randn(3, 5), torch.zeros(5, dtype=torch.long))
