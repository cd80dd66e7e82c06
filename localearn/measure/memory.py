"""Peak bytes saved for backward, overall and per layer (autograd saved-tensor hooks).

docs/guides/measurement.md#saved-bytes: a local layer frees its graph before the next layer
runs, while backprop keeps every layer's activations until its one backward. The meter counts
*live* saved bytes (added when autograd packs a tensor, removed when the packed handle is
garbage-collected with its graph), so the peak is the real high-water mark. Parameters are
excluded (resident anyway); a storage saved by several ops is counted once.
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
    "localearn_saved_tensor_meter", default=None)


class _Packed:
    """A saved tensor plus a finaliser that releases its bytes when autograd drops it."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter, key: int | None) -> None:
        self.tensor, self.meter, self.key = tensor, meter, key

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
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.per_layer: dict[str, int] = {}
        self._scopes: list[list[Any]] = []  # [name, bytes at entry, peak inside]
        self._hooks: Any = None
        self._token: contextvars.Token[SavedTensorMeter | None] | None = None

    def _pack(self, tensor: torch.Tensor) -> _Packed:
        if tensor.layout != torch.strided or tensor.is_meta:
            return _Packed(tensor, self, None)
        key = tensor.untyped_storage().data_ptr()
        if key == 0 or key in self._exclude:
            return _Packed(tensor, self, None)
        self._refs[key] = self._refs.get(key, 0) + 1
        if self._refs[key] == 1:  # a storage not yet saved: count its bytes once
            self._sizes[key] = tensor.untyped_storage().nbytes()
            self.current_bytes += self._sizes[key]
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            if self._scopes:
                self._scopes[-1][2] = max(self._scopes[-1][2], self.current_bytes)
        return _Packed(tensor, self, key)

    @staticmethod
    def _unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    def _release(self, key: int) -> None:
        self._refs[key] = self._refs.get(key, 0) - 1
        if self._refs[key] <= 0:
            del self._refs[key]
            self.current_bytes -= self._sizes.pop(key, 0)

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
        self._scopes.append([name, self.current_bytes, self.current_bytes])
        try:
            yield
        finally:
            _, base, peak = self._scopes.pop()
            self.per_layer[name] = max(self.per_layer.get(name, 0), peak - base)
            if self._scopes:  # the enclosing scope saw this peak too
                self._scopes[-1][2] = max(self._scopes[-1][2], peak)

    def state(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "per_layer": dict(self.per_layer)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Carry peaks over from a resumed run (peaks are maxima, so merging is exact)."""
        self.peak_bytes = max(self.peak_bytes, int(state.get("peak_bytes", 0)))
        for k, v in state.get("per_layer", {}).items():
            self.per_layer[k] = max(self.per_layer.get(k, 0), int(v))


@contextlib.contextmanager
def layer_scope(name: str) -> Iterator[None]:
    """Attribute saved-tensor peaks to layer ``name``; a no-op when no meter is active."""
    meter = _ACTIVE.get()
    with meter.scope(name) if meter is not None else contextlib.nullcontext():
        yield


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
