"""Measured energy per metered window: the NVML energy counter (GPU) or RAPL (CPU), plus CO2e.

References: NVIDIA, "NVML API Reference" (``nvmlDeviceGetTotalEnergyConsumption``, mJ, updated
about every 100 ms); Intel SDM Vol. 3B §15.10 (RAPL). docs/concepts/protocol.md#rule-3: counters are read
at the device-synchronised edges of every :class:`PhaseMeter` window; an idle baseline before the
first window gives idle watts (raw and idle-adjusted energy are both reported); a GPU without the
counter is ``not_measured`` (never estimated from power samples); a MIG slice or other processes
make it "cannot attribute". One CPU reader per run: the project's RAPL reader per window, or, with
a ``country``, CodeCarbon's tracker (its whole-run CPU energy is then under ``co2e``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from localearn.errors import ConfigError
from localearn.measure.carbon import CarbonTracker
from localearn.measure.energy_report import Window, build_report
from localearn.measure.gpu import Gpu, foreign_pids, open_gpu, own_memory
from localearn.measure.rapl import DEFAULT_ROOT, RaplReader, discover_zones, split_domains

NO_COUNTER = ("the GPU has no energy counter (nvmlDeviceGetTotalEnergyConsumption unsupported: "
              "pre-Volta?); GPU energy is not estimated from power samples")


class EnergyProbe:
    """GPU (NVML) and CPU (RAPL) energy per phase and per training unit, plus optional CO2e;
    :meth:`report` gives ``{"energy": ..., "gpu_memory": ...}`` for ``run.json`` ``metrics``.

    Args:
        device: the training device; None takes the trainer's (via :meth:`attach`).
        idle_seconds: length of the idle baseline before the first window (0 skips it).
        country: ISO 3166-1 code for CodeCarbon's CO2e estimate; None means no CO2e.
        rapl_root: the powercap directory (tests pass a fake tree).
        min_window_s: windows shorter than this are flagged (a ~100 ms counter cannot resolve them).
        gpu: a GPU reader (:class:`~localearn.measure.gpu.Gpu`; tests pass a fake); None opens
            NVML for a CUDA device.
    """

    def __init__(self, device: torch.device | str | None = None, idle_seconds: float = 10.0,
                 country: str | None = None, rapl_root: str | Path = DEFAULT_ROOT,
                 min_window_s: float = 5.0, gpu: Gpu | None = None) -> None:
        if idle_seconds < 0:
            raise ConfigError(f"idle_seconds must be >= 0, got {idle_seconds}")
        self.device = torch.device(device) if device is not None else None
        self.idle_seconds, self.min_window_s, self.rapl_root = float(idle_seconds), min_window_s, Path(rapl_root)
        self.carbon = CarbonTracker(country) if country is not None else None  # a bad code fails now
        self.meter: Any = None
        self.gpu: Gpu | None = gpu
        self.rapl: RaplReader | None = None
        self.gpu_reason: str | None = None
        self.cpu_reason: str | None = None
        self.windows: list[Window] = []
        self.baseline: dict[str, Any] = {}
        self.foreign: set[int] = set()
        self.process_memory_peak: int | None = None
        self.context_bytes: int | None = None
        self.start_temperature: float | None = None
        self._open: dict[str, tuple[float, str | None, float | None, dict[Any, int]]] = {}
        self._begun = False
        self._report: dict[str, Any] | None = None

    def attach(self, meter: Any) -> None:
        """Called by :class:`PhaseMeter`: gives the device and the current training unit."""
        self.meter = meter
        if self.device is None and meter.device is not None:
            self.device = torch.device(meter.device)

    @property
    def on_gpu(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def begin(self) -> None:
        """Open the meters and measure the idle baseline (the first window calls it; call it after
        building the model to keep the wait out of set-up)."""
        if self._begun:
            return
        self._begun = True
        if not self.on_gpu:
            self.gpu = None
            self.gpu_reason = f"the run used the {(self.device or torch.device('cpu')).type.upper()}, not a GPU"
        elif self.gpu is None:
            self.gpu, self.gpu_reason = open_gpu(self.device)  # type: ignore[arg-type]
        if self.gpu is not None:
            if self.gpu.energy_mj() is None:
                self.gpu_reason = NO_COUNTER
            self.start_temperature = self.gpu.temperature()  # before the idle wait (Rule 3)
            self._check_processes()
            if self.process_memory_peak is not None and torch.cuda.is_available():
                self.context_bytes = max(0, self.process_memory_peak - int(torch.cuda.memory_reserved(self.device)))
        _, rapl_reason = discover_zones(self.rapl_root)
        if self.carbon is not None:  # one CPU reader per run: CodeCarbon's
            self.cpu_reason = ("with a country, CodeCarbon reads the CPU (one reader per run): its "
                               "whole-run CPU energy is co2e.cpu_energy_kwh"
                               + (f"; RAPL: {rapl_reason}" if rapl_reason else ""))
        elif rapl_reason is None:
            self.rapl = RaplReader(self.rapl_root)
        else:
            self.cpu_reason = f"RAPL: {rapl_reason}"
        if self._gpu_j() is None and self.rapl is None:
            self.baseline = {"status": "not_measured",
                             "reason": "no energy meter on this machine (no GPU counter, no RAPL)"}
        elif self.idle_seconds <= 0:
            self.baseline = {"status": "skipped", "reason": "idle_seconds=0"}
        else:
            self._measure_baseline()
        if self.carbon is not None:
            self.carbon.start()  # after the baseline: CO2e covers the run, not the idle wait

    def _measure_baseline(self) -> None:
        t0, e0, r0 = time.perf_counter(), self._gpu_j(), self._rapl()
        time.sleep(self.idle_seconds)
        dt, e1, r1 = time.perf_counter() - t0, self._gpu_j(), self._rapl()
        self.baseline = {"status": "measured", "seconds": dt}
        if e0 is not None and e1 is not None and self.gpu is not None:
            self.baseline.update(gpu_idle_w=(e1 - e0) / dt, gpu_temperature_c_after=self.gpu.temperature())
        if self.rapl is not None:
            self.baseline["cpu_idle_w"] = {k: v / dt for k, v in split_domains(r0, r1).items()}

    def _check_processes(self) -> None:
        if self.gpu is not None:
            procs = self.gpu.processes()
            self.foreign.update(foreign_pids(procs))
            used = own_memory(procs)
            if used is not None:
                self.process_memory_peak = max(self.process_memory_peak or 0, used)

    def _gpu_j(self) -> float | None:
        mj = self.gpu.energy_mj() if self.gpu is not None else None
        return mj / 1000.0 if mj is not None else None

    def _rapl(self) -> dict[Any, int]:
        return self.rapl.totals_uj() if self.rapl is not None else {}

    def start(self, phase: str) -> None:
        self.begin()
        self._open[phase] = (time.perf_counter(), getattr(self.meter, "unit", None), self._gpu_j(), self._rapl())

    def stop(self, phase: str) -> None:
        if phase not in self._open:
            return
        t0, unit, e0, r0 = self._open.pop(phase)
        e1, r1 = self._gpu_j(), self._rapl()
        win = Window(phase, unit, time.perf_counter() - t0)
        win.gpu_j = e1 - e0 if e0 is not None and e1 is not None else None
        if self.rapl is not None:
            win.cpu_j = split_domains(r0, r1)
        if self.gpu is not None:  # edge samples: peak power, utilisation, SM clock
            for value, into in ((self.gpu.power_w(), win.power_w), (self.gpu.utilization(), win.util),
                                (self.gpu.sm_clock(), win.clock)):
                if value is not None:
                    into.append(value)
        self._check_processes()
        self.windows.append(win)

    def close(self) -> None:
        """Release NVML (idempotent)."""
        if self.gpu is not None:
            self.gpu.close()

    def report(self) -> dict[str, Any]:
        """``{"energy": {...}, "gpu_memory": {...}}`` for ``run.json`` ``metrics``."""
        if self._report is None:
            self.begin()
            co2e = self.carbon.stop() if self.carbon is not None else {
                "method": "not_requested", "reason": "no --country given (CO2e needs an explicit country)"}
            self._report = build_report(self, co2e)
            self.close()
        return self._report
