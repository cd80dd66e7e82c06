"""Fused kernels: one op per file, each with a plain-torch reference that is the CPU path.

DESIGN.md (Kernels): ``<op>(..., impl="auto")`` picks Triton when the tensors are on CUDA and
Triton imports, and the torch reference otherwise; an explicit ``impl="triton"`` that cannot run
raises; ``LOCALEARN_KERNELS=torch|triton`` forces one implementation everywhere. Layers call
``localearn.kernels.<op>`` and never import Triton themselves. This module holds that policy.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from localearn.errors import ConfigError

IMPLS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """Whether ``import triton`` would succeed (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a None placeholder in sys.modules raises ValueError
        return False


def interpreting() -> bool:
    """Triton's CPU interpreter (``TRITON_INTERPRET=1``), used by the tests on CPU machines."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Choose ``torch`` or ``triton`` for an op on ``tensors`` (see the module docstring).

    Raises:
        ConfigError: for an unknown ``impl`` or a forced Triton that cannot run here.
    """
    forced = os.environ.get("LOCALEARN_KERNELS", "").strip().lower()
    if forced and forced not in ("torch", "triton"):
        raise ConfigError(f"LOCALEARN_KERNELS must be torch or triton, got {forced!r}")
    choice = forced or impl
    if choice not in IMPLS:
        raise ConfigError(f"unknown kernel impl {impl!r}; valid: {', '.join(IMPLS)}")
    on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    runnable = triton_available() and (on_cuda or interpreting())
    if choice == "auto":
        return "triton" if runnable and on_cuda else "torch"
    if choice == "triton" and not runnable:
        why = (
            "triton is not installed"
            if not triton_available()
            else "tensors are not on CUDA (set TRITON_INTERPRET=1 to interpret on CPU)"
        )
        raise ConfigError(f"impl='triton' cannot run here: {why}")
    return choice
