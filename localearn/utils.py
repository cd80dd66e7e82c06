"""Small shared helpers: seeding, device choice, moving batches."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

from localearn.errors import ConfigError


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
    """Move a tensor, a tuple/list of tensors or a graph (anything with ``.to``) to ``device``."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch
