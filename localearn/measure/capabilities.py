"""What this machine can measure, and why not (``localearn env``).

Reference: STUDY_PROTOCOL.md Rule 3 (energy methods ``nvml_energy_counter``,
``nvml_power_poll@<Hz>``, ``rapl``, ``not_measured``; CO2e via CodeCarbon offline) and DESIGN.md
"Kernels" (Triton on CUDA, the torch reference elsewhere). Each entry says ``available`` and
either what was found or the reason it is missing; nothing here starts a measurement.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from localearn.measure.rapl import DEFAULT_ROOT, discover_zones


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def cuda_status() -> dict[str, Any]:
    if not torch.cuda.is_available():
        reason = (
            "torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA device visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES is empty)"
        )
        return {
            "available": False,
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "reason": reason,
        }
    return {
        "available": True,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def nvml_status(nvml: Any = None) -> dict[str, Any]:
    try:
        mod = nvml if nvml is not None else __import__("pynvml")
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"}
    try:
        mod.nvmlInit()
    except Exception as exc:
        return {
            "available": False,
            "nvidia_ml_py": _version("nvidia-ml-py"),
            "reason": f"NVML could not be initialised ({type(exc).__name__}: {exc}); "
            "no NVIDIA driver",
        }
    try:
        from localearn.measure.nvml import NvmlGpu

        gpus = []
        for i in range(int(mod.nvmlDeviceGetCount())):
            gpu = NvmlGpu(mod, mod.nvmlDeviceGetHandleByIndex(i))
            info = gpu.info()
            method = (
                "nvml_energy_counter"
                if gpu.energy_method == "nvml_energy_counter"
                else "nvml_power_poll"
            )
            attributable = not info["mig_enabled"] and not gpu.foreign_pids()
            gpus.append(
                {
                    **info,
                    "index": i,
                    "energy_method": method,
                    "other_processes": sorted(gpu.foreign_pids()),
                    "attributable": attributable,
                }
            )
        return {"available": True, "nvidia_ml_py": _version("nvidia-ml-py"), "gpus": gpus}
    finally:
        try:
            mod.nvmlShutdown()
        except Exception:
            pass


def rapl_status(root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    zones, reason = discover_zones(root)
    if not zones:
        return {"available": False, "reason": reason}
    return {"available": True, "zones": [f"{z.path.name} ({z.name})" for z in zones]}


def codecarbon_status() -> dict[str, Any]:
    cc = _version("codecarbon")
    if cc is None:
        return {"available": False, "reason": "codecarbon is not installed"}
    from localearn.measure.carbon import energy_mix_countries

    return {
        "available": True,
        "version": cc,
        "countries": len(energy_mix_countries()),
        "note": "offline estimate; needs --country (ISO 3166-1 alpha-3 or alpha-2)",
    }


def triton_status() -> dict[str, Any]:
    tv = _version("triton")
    if tv is None:
        return {
            "available": False,
            "reason": "triton is not installed (the torch kernels are used)",
        }
    if not torch.cuda.is_available():
        interp = os.environ.get("TRITON_INTERPRET") == "1"
        return {
            "available": False,
            "version": tv,
            "reason": "no CUDA GPU: kernels use the torch reference"
            + (" (TRITON_INTERPRET=1 runs Triton on the CPU for tests)" if interp else ""),
        }
    return {"available": True, "version": tv}


def environment_report(rapl_root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """Every meter and accelerator localearn can use here, with the reason for each absence."""
    return {
        "cuda": cuda_status(),
        "nvml": nvml_status(),
        "rapl": rapl_status(rapl_root),
        "codecarbon": codecarbon_status(),
        "triton": triton_status(),
    }


def format_environment(report: dict[str, Any]) -> str:
    """A one-screen text version of :func:`environment_report`."""
    lines = ["localearn environment: what can be measured here"]
    for key, label in (
        ("cuda", "CUDA"),
        ("nvml", "NVML (GPU energy)"),
        ("rapl", "RAPL (CPU energy)"),
        ("codecarbon", "CodeCarbon (CO2e)"),
        ("triton", "Triton kernels"),
    ):
        entry = report[key]
        if not entry["available"]:
            lines.append(f"  {label:<20} no   - {entry['reason']}")
            continue
        if key == "cuda":
            detail = (
                ", ".join(entry["devices"])
                + f" (torch {entry['torch']}, CUDA {entry['torch_cuda']})"
            )
        elif key == "nvml":
            detail = (
                "; ".join(
                    f"{g['name']} driver {g['driver_version']} CUDA {g['cuda_driver_version']}: "
                    f"{g['energy_method']}"
                    + (
                        ""
                        if g["attributable"]
                        else " but cannot attribute (MIG "
                        f"or other processes {g['other_processes']})"
                    )
                    for g in entry["gpus"]
                )
                or "no GPUs"
            )
        elif key == "rapl":
            detail = ", ".join(entry["zones"])
        elif key == "codecarbon":
            detail = f"{entry['version']}, {entry['countries']} countries; {entry['note']}"
        else:
            detail = f"triton {entry['version']}"
        lines.append(f"  {label:<20} yes  - {detail}")
    return "\n".join(lines)
