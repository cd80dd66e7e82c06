"""Peak bytes saved for backward, overall and per layer (autograd saved-tensor hooks).

This is the device-independent memory figure of DESIGN.md: exactly what local learning saves,
because a local layer frees its graph before the next layer runs while backprop keeps every
layer's activations alive until the single backward pass. Parameters are excluded (they are
resident anyway); a storage saved by several ops is counted once.

The meter counts *live* saved bytes: a saved tensor is added when autograd packs it and removed
when its graph is freed (the packed handle is garbage-collected), so the peak is the real high
water mark, not a sum over steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import resource
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import torch

_ACTIVE: contextvars.ContextVar[SavedTensorMeter | None] = contextvars.ContextVar(
    "localearn_saved_tensor_meter", default=None
)


class _Packed:
    """A saved tensor plus a finaliser that releases its bytes when autograd drops it."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter, key: int | None) -> None:
        self.tensor = tensor
        self.meter = meter
        self.key = key

    def __del__(self) -> None:
        if self.key is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Tracks live and peak bytes that autograd saves for backward.

    Use as a context manager around training; :func:`layer_scope` attributes peaks to layers.

    Attributes:
        peak_bytes: the high-water mark of live saved bytes over the whole window.
        per_layer: per layer name, the highest live bytes *above the level at scope entry*.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {self._storage_key(p) for p in exclude}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.per_layer: dict[str, int] = {}
        self._scopes: list[tuple[str, int, int]] = []  # (name, bytes at entry, peak inside)
        self._hooks: Any = None
        self._token: contextvars.Token[SavedTensorMeter | None] | None = None

    @staticmethod
    def _storage_key(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def exclude(self, tensors: Iterable[torch.Tensor]) -> None:
        """Exclude these tensors' storages (parameters) from the count."""
        self._exclude.update(self._storage_key(t) for t in tensors)

    def _pack(self, tensor: torch.Tensor) -> _Packed:
        if tensor.layout != torch.strided or tensor.is_meta:
            return _Packed(tensor, self, None)
        key = self._storage_key(tensor)
        if key == 0 or key in self._exclude:
            return _Packed(tensor, self, None)
        count = self._refs.get(key, 0)
        self._refs[key] = count + 1
        if count == 0:
            size = tensor.untyped_storage().nbytes()
            self._sizes[key] = size
            self.current_bytes += size
            if self.current_bytes > self.peak_bytes:
                self.peak_bytes = self.current_bytes
            if self._scopes:
                name, base, peak = self._scopes[-1]
                if self.current_bytes > peak:
                    self._scopes[-1] = (name, base, self.current_bytes)
        return _Packed(tensor, self, key)

    @staticmethod
    def _unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    def _release(self, key: int) -> None:
        count = self._refs.get(key, 0) - 1
        if count <= 0:
            self._refs.pop(key, None)
            self.current_bytes -= self._sizes.pop(key, 0)
        else:
            self._refs[key] = count

    def __enter__(self) -> SavedTensorMeter:
        pack, unpack = self._pack, self._unpack
        if "torch._dynamo" in sys.modules:  # --compile is in use: bookkeeping is never traced;
            # decided here, not by a decorator, so importing localearn does not import dynamo (+ triton)
            pack, unpack = torch.compiler.disable(pack), torch.compiler.disable(unpack)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
        self._hooks.__enter__()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Attribute the peak reached inside this block to ``name``."""
        self._scopes.append((name, self.current_bytes, self.current_bytes))
        try:
            yield
        finally:
            _, base, peak = self._scopes.pop()
            self.per_layer[name] = max(self.per_layer.get(name, 0), peak - base)
            if self._scopes:  # the enclosing scope saw this peak too
                outer, obase, opeak = self._scopes[-1]
                self._scopes[-1] = (outer, obase, max(opeak, peak))

    def state(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "per_layer": dict(self.per_layer)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Carry peaks over from a resumed run (peaks are maxima, so merging is exact)."""
        self.peak_bytes = max(self.peak_bytes, int(state.get("peak_bytes", 0)))
        for k, v in state.get("per_layer", {}).items():
            self.per_layer[k] = max(self.per_layer.get(k, 0), int(v))


def active_meter() -> SavedTensorMeter | None:
    """The meter installed by the enclosing ``with SavedTensorMeter()``, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def layer_scope(name: str) -> Iterator[None]:
    """Attribute saved-tensor peaks to layer ``name``; a no-op when no meter is active."""
    meter = _ACTIVE.get()
    if meter is None:
        yield
        return
    with meter.scope(name):
        yield


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
