"""Fused kernels: one op per file, each with a plain-torch reference that is the CPU path.

DESIGN.md (Kernels): ``<op>(..., impl="auto")`` picks Triton when the tensors are on CUDA and
Triton imports, and the torch reference otherwise; an explicit ``impl="triton"`` that cannot run
raises; ``LOCALEARN_KERNELS=torch|triton`` forces one implementation everywhere. Layers call
``localearn.kernels.<op>`` and never import Triton themselves. This module holds that policy,
and the per-layer one: the trainer's ``kernels``/``compile`` options reach every layer through
``configure_layers``, and a fused layer asks ``layer_impl`` which implementation to run.

Ops: ``linear_cross_entropy`` (projection head), ``ff_layer`` (Forward-Forward layer step),
``mono_forward_layer`` (Mono-Forward layer step).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

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


# --------------------------------------------------------------------------- layer policy
# The trainer's ``kernels`` and ``compile`` options reach every layer through ``configure_layers``:
# a layer with a fused op (``fused = True``) keeps the choice in ``kernel_impl``/``kernel_compile``
# and asks ``layer_impl`` at each step; any other local layer gets its ``forward_loss`` wrapped by
# ``torch.compile`` when ``compile`` is on. ``kernel_used`` is what run.json reports per layer.

_COMPILED: dict[Any, Any] = {}

# Where a layer's ``auto`` turns its Triton op on: per op, (dtype, min rows, min width) entries
# taken from a committed GPU run of benchmarks/bench_kernels.py that shows the kernel winning
# (DESIGN.md: on by default only where it wins). No GPU benchmark has been taken yet, so none:
# ``auto`` runs the torch reference for every layer until one is.
DEFAULT_ON: dict[str, list[tuple[torch.dtype, int, int]]] = {"ff_layer": [], "mono_forward_layer": []}


def check_policy(kernels: str, compile: bool) -> None:
    """Reject an unknown ``kernels`` value, or ``compile`` together with a forced Triton."""
    if kernels not in IMPLS:
        raise ConfigError(f"kernels must be one of {', '.join(IMPLS)}, got {kernels!r}")
    if compile and kernels == "triton":
        raise ConfigError("kernels='triton' and compile=True exclude each other: choose one fused path")


def configure_layers(module: torch.nn.Module, kernels: str = "auto", compile: bool = False) -> None:
    """Apply the kernel policy to every local layer inside ``module`` (see the comment above)."""
    from localearn.layer import LocalLayer

    check_policy(kernels, compile)
    for layer in module.modules():
        if not isinstance(layer, LocalLayer):
            continue
        if getattr(layer, "fused", False):
            layer.kernel_impl, layer.kernel_compile = kernels, compile  # type: ignore[assignment]
        elif compile and not hasattr(layer.forward_loss, "_torchdynamo_orig_callable"):
            layer.forward_loss = torch.compile(layer.forward_loss)  # type: ignore[method-assign]
            layer.kernel_used = "compile"  # type: ignore[assignment]


def layer_impl(layer: torch.nn.Module, op: str, x: torch.Tensor, weight: torch.Tensor) -> str:
    """``compile``, ``torch`` or ``triton`` for a fused layer's ``op`` on input ``x`` (rows × K) and
    ``weight`` (width × K); recorded in ``layer.kernel_used``. ``LOCALEARN_KERNELS=triton`` wins over
    ``compile``, ``compile`` over ``auto``; ``auto`` picks Triton only on a CUDA shape that
    ``DEFAULT_ON`` lists."""
    forced = os.environ.get("LOCALEARN_KERNELS", "").strip().lower()
    impl = getattr(layer, "kernel_impl", "auto")
    if getattr(layer, "kernel_compile", False) and forced != "triton":
        choice = "compile"
    else:
        choice = resolve_impl(impl, x, weight)
        if choice == "triton" and impl == "auto" and not forced and not any(
                x.dtype == dt and x.shape[0] >= rows and weight.shape[0] >= width
                for dt, rows, width in DEFAULT_ON.get(op, [])):
            choice = "torch"
    layer.kernel_used = choice  # type: ignore[assignment]
    return choice


def compiled(fn: Any) -> Any:
    """``torch.compile(fn)``, built once per function (Inductor: Triton on CUDA, C++ on CPU)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]
