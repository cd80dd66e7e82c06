"""Small shared helpers: seeding, device choice, moving batches."""

from __future__ import annotations

import hashlib
import inspect
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from localearn.errors import ConfigError


def keyword_defaults(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """``fn``'s keyword parameters and their defaults (``inspect.Parameter.empty`` when required);
    None when ``fn`` takes ``**kwargs`` and so accepts anything. A class stands for its constructor,
    whose ``**kwargs`` are followed up the class's bases (a learner forwards the shared options)."""
    if inspect.isclass(fn):
        return _constructor_defaults(fn, skip)
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p.default for n, p in params.items()
            if n not in ("self", *skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _constructor_defaults(cls: type, skip: tuple[str, ...]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass.__module__.startswith("torch."):  # nn.Module takes *args, **kwargs: the end
            return out
        params = inspect.signature(init).parameters
        for n, p in params.items():
            if n not in ("self", *skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(n, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return out
    return None


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type its default implies (None always passes to the callee)."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_kwargs(fn: Callable[..., Any], options: dict[str, Any], owner: str, skip: tuple[str, ...] = ()) -> None:
    """Reject options ``fn`` does not take, or whose type contradicts the default's, naming both.

    ``--opt input_head=notabool`` would otherwise become a truthy string.
    """
    defaults = keyword_defaults(fn, skip)
    if defaults is None:
        return
    bad = sorted(set(options) - set(defaults))
    if bad:
        valid = f"valid: {', '.join(defaults)}" if defaults else "it takes no options"
        raise ConfigError(f"{owner} has no option {', '.join(map(repr, bad))}; {valid}")
    for name, value in options.items():
        if not _fits(value, defaults[name]):
            kind = type(defaults[name]).__name__
            raise ConfigError(f"{owner} option {name}={value!r} must be a {kind} (default {defaults[name]!r})")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. ``(seed, "epoch", 3)``) without collisions
    between neighbouring seeds, as ``seed + epoch`` would have."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor, a tuple/list of tensors or a graph (anything with ``.to``) to ``device``.

    Copies to a GPU are non-blocking: from pinned memory (DataLoaders pin on CUDA, see
    :func:`localearn.data.base.place_data`) the host queues the copy and runs on; from pageable
    memory torch copies synchronously anyway."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch
