"""What this machine can measure, and why not (``localearn env``).

Reference: docs/concepts/protocol.md#rule-3 (energy methods ``nvml_energy_counter``, ``rapl``,
``not_measured``; CO2e via CodeCarbon offline) and docs/guides/kernels.md#dispatch (Triton on CUDA, the torch
reference elsewhere). Each entry says ``available`` and what was found or why it is missing;
nothing here starts a measurement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from localearn.measure.gpu import CudaGpu, foreign_pids, load_nvml
from localearn.measure.provenance import package_version
from localearn.measure.rapl import DEFAULT_ROOT, discover_zones


def _absent(reason: str | None, **extra: Any) -> dict[str, Any]:
    return {"available": False, **extra, "reason": reason}


def cuda_status() -> dict[str, Any]:
    base = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return _absent("torch was built without CUDA" if torch.version.cuda is None else
                       "no CUDA device visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES is empty)", **base)
    return {"available": True, **base,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def nvml_status() -> dict[str, Any]:
    nvml, reason = load_nvml()
    version = package_version("nvidia-ml-py")
    if nvml is None:
        return _absent(reason, nvidia_ml_py=version)
    gpus = []
    try:
        for i in range(int(nvml.nvmlDeviceGetCount())):
            gpu = CudaGpu(nvml, nvml.nvmlDeviceGetHandleByIndex(i))
            info, others = gpu.info(), sorted(foreign_pids(gpu.processes()))
            method = "nvml_energy_counter" if gpu.energy_mj() is not None else "not_measured (no energy counter)"
            gpus.append({**info, "index": i, "energy_method": method, "other_processes": others,
                         "attributable": not info["mig_enabled"] and not others})
    finally:
        CudaGpu(nvml, None).close()  # nvmlShutdown, errors swallowed
    return {"available": True, "nvidia_ml_py": version, "gpus": gpus}


def rapl_status(root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    zones, reason = discover_zones(root)
    return {"available": True, "zones": [f"{z.path.name} ({z.name})" for z in zones]} if zones else _absent(reason)


def codecarbon_status() -> dict[str, Any]:
    cc = package_version("codecarbon")
    if cc is None:
        return _absent("codecarbon is not installed")
    from localearn.measure.carbon import energy_mix_countries

    return {"available": True, "version": cc, "countries": len(energy_mix_countries()),
            "note": "offline estimate; needs --country (ISO 3166-1 alpha-3 or alpha-2)"}


def triton_status() -> dict[str, Any]:
    tv = package_version("triton")
    if tv is None:
        return _absent("triton is not installed (the torch kernels are used)")
    if not torch.cuda.is_available():
        interp = os.environ.get("TRITON_INTERPRET") == "1"
        return _absent("no CUDA GPU: kernels use the torch reference"
                       + (" (TRITON_INTERPRET=1 runs Triton on the CPU for tests)" if interp else ""), version=tv)
    return {"available": True, "version": tv}


def environment_report(rapl_root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """Every meter and accelerator localearn can use here, with the reason for each absence."""
    return {"cuda": cuda_status(), "nvml": nvml_status(), "rapl": rapl_status(rapl_root),
            "codecarbon": codecarbon_status(), "triton": triton_status()}


def _detail(key: str, entry: dict[str, Any]) -> str:
    if key == "cuda":
        return ", ".join(entry["devices"]) + f" (torch {entry['torch']}, CUDA {entry['torch_cuda']})"
    if key == "nvml":
        return "; ".join(
            f"{g['name']} driver {g['driver_version']} CUDA {g['cuda_driver_version']}: {g['energy_method']}"
            + ("" if g["attributable"] else f" but cannot attribute (MIG or other processes {g['other_processes']})")
            for g in entry["gpus"]) or "no GPUs"
    if key == "rapl":
        return ", ".join(entry["zones"])
    if key == "codecarbon":
        return f"{entry['version']}, {entry['countries']} countries; {entry['note']}"
    return f"triton {entry['version']}"


def format_environment(report: dict[str, Any]) -> str:
    """A one-screen text version of :func:`environment_report`."""
    lines = ["localearn environment: what can be measured here"]
    for key, label in (("cuda", "CUDA"), ("nvml", "NVML (GPU energy)"), ("rapl", "RAPL (CPU energy)"),
                       ("codecarbon", "CodeCarbon (CO2e)"), ("triton", "Triton kernels")):
        entry = report[key]
        ok = entry["available"]
        lines.append(f"  {label:<20} {'yes' if ok else 'no '}  - {_detail(key, entry) if ok else entry['reason']}")
    return "\n".join(lines)

