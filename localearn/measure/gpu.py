"""One GPU's readings for the energy probe: NVML's energy counter, processes and MIG mode; power,
temperature, utilisation and SM clock through the ``torch.cuda`` wrappers of NVML.

Reference: NVIDIA, "NVML API Reference Guide" (``nvmlDeviceGetTotalEnergyConsumption``: mJ since
the driver loaded, Volta and newer). An unsupported reading is None ("not measured" in the report),
never an exception mid-training. Attribution (docs/concepts/protocol.md#rule-3): NVML reports host PIDs;
in a container with its own PID namespace our PID is absent, so a single listed process is taken
to be ours and two or more mean "cannot attribute".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import torch

Process = tuple[int, int | None]  # (pid, bytes NVML charges to it, when visible)


class Gpu(Protocol):
    """What the energy probe reads from a GPU (tests pass a fake): counter (mJ), power (W),
    temperature (°C), utilisation (%), SM clock (MHz), processes, board info."""

    def energy_mj(self) -> int | None: ...
    def power_w(self) -> float | None: ...
    def temperature(self) -> float | None: ...
    def utilization(self) -> float | None: ...
    def sm_clock(self) -> float | None: ...
    def processes(self) -> list[Process]: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported and friends: the reading is just absent
        return None


def foreign_pids(procs: list[Process]) -> set[int]:
    """PIDs of other processes on the GPU (see the module docstring on PID namespaces)."""
    pids, own = {pid for pid, _ in procs}, os.getpid()
    if own in pids:
        return pids - {own}
    return pids if len(pids) > 1 else set()


def own_memory(procs: list[Process]) -> int | None:
    """Bytes NVML charges to this process (the single listed process inside a PID namespace)."""
    own = [p for p in procs if p[0] == os.getpid()]
    if not own and len({pid for pid, _ in procs}) == 1:
        own = procs[:1]
    used = [b for _, b in own if b is not None]
    return max(used) if used else None


class CudaGpu:
    """One board through ``pynvml`` (``handle``) and, for ``device``, the ``torch.cuda`` wrappers."""

    def __init__(self, nvml: Any, handle: Any, device: torch.device | None = None) -> None:
        self.nvml, self.handle, self.device = nvml, handle, device
        self._closed = False

    def _nv(self, fn: str, *args: Any) -> Any:
        return _try(getattr(self.nvml, fn), *args)

    def _torch(self, fn: Callable[[Any], int], scale: float = 1.0) -> float | None:
        value = _try(fn, self.device) if self.device is not None else None
        return float(value) * scale if value is not None else None

    def energy_mj(self) -> int | None:  # torch has no wrapper for the energy counter
        value = self._nv("nvmlDeviceGetTotalEnergyConsumption", self.handle)
        return int(value) if value is not None else None

    def power_w(self) -> float | None:
        return self._torch(torch.cuda.power_draw, 1e-3)  # mW

    def temperature(self) -> float | None:
        return self._torch(torch.cuda.temperature)

    def utilization(self) -> float | None:
        return self._torch(torch.cuda.utilization)

    def sm_clock(self) -> float | None:
        return self._torch(torch.cuda.clock_rate)

    def processes(self) -> list[Process]:
        return [(int(p.pid), None if getattr(p, "usedGpuMemory", None) is None else int(p.usedGpuMemory))
                for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")
                for p in self._nv(fn, self.handle) or []]

    def mig_enabled(self) -> bool:
        if self._nv("nvmlDeviceIsMigDeviceHandle", self.handle) or "MIG-" in os.environ.get("CUDA_VISIBLE_DEVICES", ""):
            return True  # a MIG slice: the energy counter belongs to the whole board
        mode = self._nv("nvmlDeviceGetMigMode", self.handle)
        current = mode[0] if isinstance(mode, (tuple, list)) else mode
        return mode is not None and bool(current == getattr(self.nvml, "NVML_DEVICE_MIG_ENABLE", 1))

    def info(self) -> dict[str, Any]:
        """Name, driver, CUDA driver, power limit, persistence and MIG mode of the board."""

        def text(value: Any) -> str | None:
            return value.decode() if isinstance(value, bytes) else None if value is None else str(value)

        cuda_drv = self._nv("nvmlSystemGetCudaDriverVersion")
        limit = self._nv("nvmlDeviceGetEnforcedPowerLimit", self.handle)
        persistence = self._nv("nvmlDeviceGetPersistenceMode", self.handle)
        return {
            "name": text(self._nv("nvmlDeviceGetName", self.handle)),
            "uuid": text(self._nv("nvmlDeviceGetUUID", self.handle)),
            "driver_version": text(self._nv("nvmlSystemGetDriverVersion")),
            "cuda_driver_version": f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}" if cuda_drv else None,
            "torch_cuda_version": torch.version.cuda,
            "torch_version": torch.__version__,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
            "persistence_mode": bool(persistence) if persistence is not None else None,
            "mig_enabled": self.mig_enabled(),
            "power_source": "torch.cuda.power_draw (nvmlDeviceGetPowerUsage) at window edges",
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._nv("nvmlShutdown")


def load_nvml() -> tuple[Any, str | None]:
    """The initialised ``pynvml`` module, or (None, the reason it cannot be used)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    except Exception as exc:
        return None, f"NVML could not be initialised ({type(exc).__name__}: {exc}); no NVIDIA driver"
    return pynvml, None


def open_gpu(device: torch.device) -> tuple[CudaGpu | None, str | None]:
    """Open NVML for ``device``, matched by UUID (robust to CUDA_VISIBLE_DEVICES reordering)."""
    nvml, reason = load_nvml()
    if nvml is None:
        return None, reason
    uuid = str(_try(lambda: torch.cuda.get_device_properties(device).uuid))
    handle = _try(nvml.nvmlDeviceGetHandleByUUID, uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    if handle is None:
        return None, f"NVML has no handle for {device} (UUID {uuid})"
    return CudaGpu(nvml, handle, device), None
