"""Fused kernels: one op per file, each with a plain-torch reference that is the CPU path.

docs/guides/kernels.md#dispatch: ``<op>(..., impl="auto")`` picks Triton when the tensors are on CUDA and
Triton imports, and the torch reference otherwise; an explicit ``impl="triton"`` that cannot run
raises; ``LOCALEARN_KERNELS=torch|triton`` forces one implementation everywhere. Layers call
``localearn.kernels.<op>`` and never import Triton themselves. This module holds that policy,
and the per-layer one: the trainer's ``kernels``/``compile`` options reach every layer through
``configure_layers``, and a fused layer asks ``layer_impl`` which implementation to run.

Ops: ``linear_cross_entropy`` (projection head), ``ff_layer`` (Forward-Forward layer step),
``mono_forward_layer`` (Mono-Forward layer step).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
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
# One function decides each layer's implementation. A layer declares its fused op
# (``LocalLayer.fused_op``, a key of FUSED_OPS); the trainer's ``kernels``/``compile`` options reach
# it through ``configure_layers``; the base ``LocalLayer.forward_loss`` asks ``dispatch`` for the
# implementation and calls the layer's ``fused_forward_loss`` with it. Heads that end in a linear
# map and a cross-entropy (CaFo's predictors, Mono-Forward's projection over a conv block) ask
# ``choose`` for ``linear_cross_entropy``. Precedence, first match wins:
#   1. LOCALEARN_KERNELS=torch|triton forces that implementation of every fused op;
#   2. --kernels triton (explicit; excludes --compile);
#   3. --compile: the op's torch reference through torch.compile;
#   4. --kernels torch: the eager reference;
#   5. auto: Triton on CUDA for the shapes DEFAULT_ON lists, the eager reference otherwise.
# ``kernel_used`` is what run.json reports per layer.

# op name -> (module, reference function, public op)
FUSED_OPS: dict[str, tuple[str, str, str]] = {
    "ff_layer": ("localearn.kernels.ff_layer", "ff_layer_ref", "ff_layer"),
    "mono_forward_layer": ("localearn.kernels.mono_forward_layer", "mono_forward_layer_ref", "mono_forward_layer"),
    "linear_cross_entropy": ("localearn.kernels.linear_cross_entropy", "linear_cross_entropy_ref",
                             "linear_cross_entropy"),
}

_COMPILED: dict[Any, Any] = {}

# Where ``auto`` turns a Triton op on: per op, (dtype, min rows, min width) entries taken from a
# committed GPU run of benchmarks/bench_kernels.py that shows the kernel winning: a kernel ships on
# by default only where it wins (docs/guides/kernels.md#dispatch). No GPU benchmark has been taken yet, so
# none: ``auto`` runs the torch reference for every layer until one is.
DEFAULT_ON: dict[str, list[tuple[torch.dtype, int, int]]] = {op: [] for op in FUSED_OPS}


def check_policy(kernels: str, compile: bool) -> None:
    """Reject an unknown ``kernels`` value, or ``compile`` together with a forced Triton."""
    if kernels not in IMPLS:
        raise ConfigError(f"kernels must be one of {', '.join(IMPLS)}, got {kernels!r}")
    if compile and kernels == "triton":
        raise ConfigError("kernels='triton' and compile=True exclude each other: choose one fused path")


def configure_layers(module: torch.nn.Module, kernels: str = "auto", compile: bool = False,
                     cuda_graphs: bool = False) -> None:
    """Give every local layer inside ``module`` the run's kernel options. With ``compile`` the whole
    local step is compiled: a layer without a fused op gets its ``forward_loss`` compiled (its backward
    is compiled with it), a fused op runs its compiled reference, and every layer's optimizer step is
    compiled too. ``cuda_graphs`` compiles in ``reduce-overhead`` mode (CUDA graphs, static shapes)."""
    check_policy(kernels, compile)
    mode = "reduce-overhead" if cuda_graphs else None
    for layer in module.modules():
        if not hasattr(layer, "fused_op"):  # not a LocalLayer
            continue
        layer.kernel_impl, layer.kernel_compile = kernels, compile  # type: ignore[assignment]
        if not compile:
            continue
        if layer.fused_op is None and not hasattr(layer.forward_loss, "_torchdynamo_orig_callable"):
            layer.forward_loss = torch.compile(layer.forward_loss, mode=mode)
            layer.kernel_used = "compile"
        opt = getattr(layer, "optimizer", None)
        if opt is not None and not hasattr(opt.step, "_torchdynamo_orig_callable"):  # the optimizer step
            opt.step = torch.compile(opt.step, mode=mode)


def cuda_graphs_setting(learner: Any, wanted: bool, device: torch.device) -> bool:
    """``--cuda-graphs`` for ``learner`` on ``device``: CUDA only; a learner whose step is not static
    (``cuda_graph_refusal``) falls back to plain compilation, saying why on stderr."""
    if wanted and device.type != "cuda":
        raise ConfigError("--cuda-graphs captures CUDA graphs: it needs a CUDA device")
    if wanted and learner.cuda_graph_refusal:
        print(f"localearn: no CUDA graphs for {learner.name} ({learner.cuda_graph_refusal}); "
              "compiling without them", file=sys.stderr)
        return False
    return wanted


def choose(layer: Any, op: str, x: torch.Tensor, weight: torch.Tensor) -> str:
    """``compile``, ``torch`` or ``triton`` for ``layer``'s ``op`` on input ``x`` (rows x K) and
    ``weight`` (width x K), by the precedence above; recorded in ``layer.kernel_used``."""
    forced = os.environ.get("LOCALEARN_KERNELS", "").strip().lower()
    impl = getattr(layer, "kernel_impl", "auto")
    if forced:
        choice = resolve_impl(forced, x, weight)
    elif impl == "triton":
        choice = resolve_impl("triton", x, weight)
    elif getattr(layer, "kernel_compile", False):
        choice = "compile"
    elif impl == "torch":
        choice = "torch"
    else:
        rows = x.reshape(-1, x.shape[-1]).shape[0] if x.dim() else 0
        wins = any(x.dtype == dt and rows >= r and weight.shape[0] >= w for dt, r, w in DEFAULT_ON.get(op, []))
        choice = "triton" if wins and resolve_impl("auto", x, weight) == "triton" else "torch"
    layer.kernel_used = choice
    return choice


def implementation(op: str, impl: str) -> Any:
    """The callable that runs ``op`` as ``impl``: the compiled reference (built once), or the
    public op with ``impl`` bound."""
    module_name, ref_name, op_name = FUSED_OPS[op]
    module = importlib.import_module(module_name)
    if impl == "compile":
        ref = getattr(module, ref_name)
        if ref not in _COMPILED:  # Inductor: Triton on CUDA, C++ on CPU
            _COMPILED[ref] = torch.compile(ref)
        return _COMPILED[ref]
    return functools.partial(getattr(module, op_name), impl=impl)


def dispatch(layer: Any, x: torch.Tensor) -> Any:
    """The implementation of ``layer``'s fused op for input ``x``, or None when the layer declares
    none or this instance cannot use it (``fused_weight()`` is None)."""
    op = getattr(layer, "fused_op", None)
    if op is None:
        return None
    weight = layer.fused_weight()
    if weight is None:
        return None
    return implementation(op, choose(layer, op, x.flatten(1) if x.dim() > 2 else x, weight))
