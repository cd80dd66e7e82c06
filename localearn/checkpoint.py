"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same directory, flushed to disk and then
renamed over the old one (``os.replace`` is atomic on POSIX), so a crash, SIGKILL or Ctrl-C at any
moment leaves either the previous complete checkpoint or the new complete one, never a torn file.

A run directory from elsewhere is data, never code: checkpoints hold only tensors and plain
values (dicts, lists, tuples, str, numbers, bool, None) and are read with
``torch.load(..., weights_only=True)``, whose unpickler refuses every other global, so a crafted
file (say, one whose ``__reduce__`` calls ``os.system``) is rejected before anything in it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickletools
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from localearn.errors import LocalearnError

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
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


def plain(obj: Any) -> Any:
    """``obj`` with everything but tensors, containers and plain scalars turned into ``str``,
    so that the weights-only unpickler can read it back (user options may hold a ``Path``)."""
    if isinstance(obj, (torch.Tensor, str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return str(obj)


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = False) -> None:
    """Write ``state`` (tensors allowed) atomically with ``torch.save``; ``run``, ``config`` and
    ``trainer`` entries are made plain (see :func:`plain`). ``keep_previous`` keeps the file it
    replaces as ``checkpoint.prev.pt`` (distributed ranks resume from a checkpoint all have)."""
    state = {k: plain(v) if k in ("run", "config", "trainer", "meters") else v for k, v in state.items()}
    path = Path(path)
    if keep_previous and path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, path.with_name(PREVIOUS_NAME))
    _atomic_write(path, lambda fh: torch.save({"format": FORMAT, **state}, fh))


def _unsafe_reason(exc: BaseException) -> str | None:
    """The global a weights-only load refused, if that is why it failed (else None)."""
    match = re.search(r"[Uu]nsupported (?:GLOBAL|global:?\s*GLOBAL)\s*([\w.]+)", str(exc))
    return f"it would import {match.group(1)}" if match else None


def _raw_pickle_imports(path: Path) -> str | None:
    """For a raw pickle (not a ``torch.save`` zip, which torch's unpickler reads opcode by opcode
    itself), the globals it would import, read with ``pickletools`` (which runs nothing)."""
    if zipfile.is_zipfile(path):
        return None
    names: list[str] = []
    strings: list[str] = []
    with contextlib.suppress(Exception), path.open("rb") as fh:
        for count, (op, arg, _) in enumerate(pickletools.genops(fh)):
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings = [*strings[-1:], arg]
            elif op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
            if count > 100_000:
                break
    return f"it would import {', '.join(dict.fromkeys(names))}" if names else None


def _short(exc: BaseException) -> str:
    """One informative line of a load error (torch's weights-only errors span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file", "Check the"))]
    return (useful or lines or [type(exc).__name__])[0]


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
        with warnings.catch_warnings():  # torch warns (two lines) about a raw pickle's protocol first
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a crafted, truncated or foreign file
        reason = _unsafe_reason(exc) or _raw_pickle_imports(path)
        if reason is not None:
            raise LocalearnError(f"refusing to load {path}: not a plain-data checkpoint ({reason}); "
                                 "nothing in it was run") from exc
        detail = _short(exc) if zipfile.is_zipfile(path) else "not a torch.save zip file"
        raise LocalearnError(f"{path} is not a readable localearn checkpoint ({detail})") from exc
    if not isinstance(state, dict) or type(state.get("format")) is not int or state["format"] != FORMAT:
        raise LocalearnError(f"{path} is not a localearn checkpoint (format {FORMAT})")
    return state


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (``run.json`` is never half-written)."""
    data = json.dumps(obj, indent=2, sort_keys=False, default=str).encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))
