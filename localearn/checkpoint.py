"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same directory, flushed to disk and then
renamed over the old one (``os.replace`` is atomic on POSIX), so a crash, SIGKILL or Ctrl-C at any
moment leaves either the previous complete checkpoint or the new complete one, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from localearn.errors import LocalearnError

CHECKPOINT_NAME = "checkpoint.pt"
RUN_NAME = "run.json"
FORMAT = 1


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors allowed) atomically with ``torch.save``."""
    _atomic_write(Path(path), lambda fh: torch.save({"format": FORMAT, **state}, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        LocalearnError: when the file is missing or not a localearn checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise LocalearnError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise LocalearnError(f"{path} is not a readable localearn checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LocalearnError(f"{path} is not a localearn checkpoint (format {FORMAT})")
    return state


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (``run.json`` is never half-written)."""
    data = json.dumps(obj, indent=2, sort_keys=False, default=str).encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))
