"""What produced a run: library versions, device, host (docs/concepts/protocol.md#provenance)."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("localearn", "torch", "torchvision", "triton", "torch-geometric", "optuna", "numpy",
             "scikit-learn", "nvidia-ml-py", "codecarbon")


def package_version(pkg: str) -> str | None:
    """The installed version of distribution ``pkg``, None when absent (the one version helper)."""
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The localearn source commit, when running from a git checkout."""
    try:
        res = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    return {"python": platform.python_version(), **{pkg: package_version(pkg) for pkg in _PACKAGES},
            "cuda": torch.version.cuda,
            "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
            "git_commit": git_commit()}


def device_info(device: torch.device) -> dict[str, Any]:
    """The device a run used, plus the host's CPU and OS."""
    info: dict[str, Any] = {"type": device.type, "platform": platform.platform(),
                            "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    if device.type != "cuda":
        return {**info, "name": "cpu"}
    props = torch.cuda.get_device_properties(device.index if device.index is not None else torch.cuda.current_device())
    return {**info, "name": props.name, "total_memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}


def write_result(path: str | Path, benchmark: str, device: torch.device | str, **payload: Any) -> Path:
    """Write a benchmark's JSON stamped with what produced it: name, date, device and versions
    (the rule for ``benchmarks/results/*.json``)."""
    record = {"benchmark": benchmark, "date": dt.date.today().isoformat(),
              "device": device_info(torch.device(device)), "versions": versions(), **payload}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))
    return path
