"""A thin NVML wrapper for one GPU: energy counter, power, processes, MIG, and its description.

Reference: NVIDIA, "NVML API Reference Guide" (nvidia-ml-py, ``pynvml``). Every optional query
returns None when the board or driver does not support it, so that a missing reading becomes
"not measured" in the report rather than an exception in the middle of training.

Attribution (STUDY_PROTOCOL.md Rule 3): the energy counter is per board, so a MIG slice or other
processes on the same GPU make the figure unattributable. NVML reports host PIDs; inside a
container with its own PID namespace this process's PID is not in the list, so when our PID is
absent a single listed process is taken to be ours and two or more mean "cannot attribute".
"""

from __future__ import annotations

import os
from typing import Any

import torch


def _load_nvml(nvml: Any) -> Any:
    if nvml is not None:
        return nvml
    import pynvml

    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _physical_index(device: torch.device) -> int:
    """NVML index of a torch device, honouring ``CUDA_VISIBLE_DEVICES`` given as integers."""
    idx = (
        device.index
        if device.index is not None
        else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        parts = [p.strip() for p in visible.split(",")]
        if all(p.isdigit() for p in parts) and idx < len(parts):
            return int(parts[idx])
    return idx


class NvmlGpu:
    """One GPU as NVML sees it.

    Args:
        nvml: the ``pynvml`` module (or a fake with the same functions).
        handle: the NVML device handle.
    """

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self.energy_method, self.energy_reason = "nvml_energy_counter", None
        self.power_source = "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)"
        if self.energy_mj() is None:
            self.energy_method = "power_poll"
            self.energy_reason = "nvmlDeviceGetTotalEnergyConsumption not supported (pre-Volta?)"
        if self._instant_power_mw() is None:
            self.power_source = "nvmlDeviceGetPowerUsage (may be a 1 s average on Ampere+)"
        self._closed = False

    def _try(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(*args)
        except Exception:  # NVMLError_NotSupported and friends: the reading is just absent
            return None

    # --- readings --------------------------------------------------------------------
    def energy_mj(self) -> int | None:
        """Total energy since driver load, mJ (None when unsupported)."""
        value = self._try("nvmlDeviceGetTotalEnergyConsumption", self.handle)
        return int(value) if value is not None else None

    def _instant_power_mw(self) -> float | None:
        field_id = getattr(self.nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return None
        values = self._try("nvmlDeviceGetFieldValues", self.handle, [field_id])
        if not values or getattr(values[0], "nvmlReturn", 1) != 0:
            return None
        return float(values[0].value.uiVal)

    def power_w(self) -> float:
        """Power now, in watts (instantaneous field where the driver has it)."""
        mw = (
            self._instant_power_mw() if self.power_source.startswith("nvmlDeviceGetField") else None
        )
        if mw is None:
            mw = float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))
        return mw / 1000.0

    def utilization(self) -> float | None:
        rates = self._try("nvmlDeviceGetUtilizationRates", self.handle)
        return float(rates.gpu) if rates is not None else None

    def sm_clock(self) -> float | None:
        value = self._try(
            "nvmlDeviceGetClockInfo", self.handle, getattr(self.nvml, "NVML_CLOCK_SM", 1)
        )
        return float(value) if value is not None else None

    def temperature(self) -> float | None:
        value = self._try(
            "nvmlDeviceGetTemperature", self.handle, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0)
        )
        return float(value) if value is not None else None

    def mig_enabled(self) -> bool:
        if self._try("nvmlDeviceIsMigDeviceHandle", self.handle):
            return True  # a MIG slice: the energy counter belongs to the whole board
        if "MIG-" in os.environ.get("CUDA_VISIBLE_DEVICES", ""):
            return True
        mode = self._try("nvmlDeviceGetMigMode", self.handle)
        if mode is None:
            return False
        current = mode[0] if isinstance(mode, (tuple, list)) else mode
        return bool(current == getattr(self.nvml, "NVML_DEVICE_MIG_ENABLE", 1))

    def _processes(self) -> list[Any]:
        procs: list[Any] = []
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            procs.extend(self._try(fn, self.handle) or [])
        return procs

    def foreign_pids(self) -> set[int]:
        """PIDs of other processes on this GPU (see the module docstring on PID namespaces)."""
        pids = {int(p.pid) for p in self._processes()}
        own = os.getpid()
        if own in pids:
            return pids - {own}
        return pids if len(pids) > 1 else set()

    def process_memory(self) -> int | None:
        """Bytes NVML charges to this process on this GPU (None when not visible)."""
        procs = self._processes()
        own = [p for p in procs if int(p.pid) == os.getpid()]
        if not own and len({int(p.pid) for p in procs}) == 1:
            own = procs[:1]  # PID namespace: the single process listed is this one
        used = [int(p.usedGpuMemory) for p in own if getattr(p, "usedGpuMemory", None) is not None]
        return max(used) if used else None

    def info(self) -> dict[str, Any]:
        """Name, driver, CUDA driver, power limit, persistence and MIG mode of the board."""
        cuda_drv = self._try("nvmlSystemGetCudaDriverVersion")
        limit = self._try("nvmlDeviceGetEnforcedPowerLimit", self.handle)
        persistence = self._try("nvmlDeviceGetPersistenceMode", self.handle)
        name = self._try("nvmlDeviceGetName", self.handle)
        driver = self._try("nvmlSystemGetDriverVersion")
        uuid = self._try("nvmlDeviceGetUUID", self.handle)
        return {
            "name": _text(name) if name is not None else None,
            "uuid": _text(uuid) if uuid is not None else None,
            "driver_version": _text(driver) if driver is not None else None,
            "cuda_driver_version": f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}"
            if cuda_drv
            else None,
            "torch_cuda_version": torch.version.cuda,
            "torch_version": torch.__version__,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
            "persistence_mode": bool(persistence) if persistence is not None else None,
            "mig_enabled": self.mig_enabled(),
            "power_source": self.power_source,
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._try("nvmlShutdown")


def open_gpu(device: torch.device, nvml: Any = None) -> tuple[NvmlGpu | None, str | None]:
    """Open NVML for ``device``; returns (gpu, None) or (None, the reason it cannot be read)."""
    try:
        mod = _load_nvml(nvml)
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        mod.nvmlInit()
    except Exception as exc:
        return None, f"NVML could not be initialised ({type(exc).__name__}: {exc})"
    handle = None
    if torch.cuda.is_available():
        try:  # match by UUID: robust to CUDA_VISIBLE_DEVICES reordering and UUID lists
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            handle = mod.nvmlDeviceGetHandleByUUID(
                uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            )
        except Exception:
            handle = None
    if handle is None:
        try:
            handle = mod.nvmlDeviceGetHandleByIndex(_physical_index(device))
        except Exception as exc:
            return None, f"NVML has no handle for {device} ({type(exc).__name__}: {exc})"
    return NvmlGpu(mod, handle), None
