from __future__ import annotations

import pytest
import torch
from localearn.kernels import resolve_impl

from localearn.errors import ConfigError


def test_auto_is_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_impl("auto", torch.zeros(2)) == "torch"


def test_forced_triton_that_cannot_run_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="impl='triton' cannot run here"):
        resolve_impl("triton", torch.zeros(2))


def test_env_forces_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALEARN_KERNELS", "torch")
    assert resolve_impl("triton", torch.zeros(2)) == "torch"
    monkeypatch.setenv("LOCALEARN_KERNELS", "cuda")
    with pytest.raises(ConfigError, match="LOCALEARN_KERNELS must be torch or triton"):
        resolve_impl("auto", torch.zeros(2))
    monkeypatch.delenv("LOCALEARN_KERNELS")
    with pytest.raises(ConfigError, match="unknown kernel impl 'fast'"):
        resolve_impl("fast")
