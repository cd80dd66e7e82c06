"""Measured energy per metered window: the NVML energy counter, a power-poll fallback and RAPL.

References: NVIDIA, "NVML API Reference" (``nvmlDeviceGetTotalEnergyConsumption``: mJ since the
driver was loaded, Volta and newer, updated about every 100 ms); Intel SDM Vol. 3B §15.10 (RAPL).
The rules are STUDY_PROTOCOL.md Rule 3:

* the GPU counter is read at the device-synchronised edges of every window (:class:`PhaseMeter`
  synchronises before calling the probe); windows shorter than ``min_window_s`` (5 s) are flagged,
  because a 100 ms counter cannot resolve them;
* where the counter is unsupported, instantaneous power is polled in a background thread and
  integrated with the trapezoid rule (label ``nvml_power_poll@<Hz>``);
* an idle baseline (``idle_seconds``, default 10 s, after the CUDA context exists and before the
  first window) gives idle watts; raw energy and ``raw - idle W x duration`` are both reported;
* a MIG slice or other processes on the GPU make the GPU figure "cannot attribute", never a
  number; CPU package and DRAM come from RAPL (:mod:`localearn.measure.rapl`), machine-wide;
* CO2e, when a country is given, comes from CodeCarbon's offline tracker
  (:mod:`localearn.measure.carbon`) and is labelled an estimate.

:class:`EnergyProbe` plugs into the trainer's :class:`PhaseMeter`; its :meth:`EnergyProbe.report`
returns ``{"energy": ..., "gpu_memory": ...}`` merged into ``run.json`` ``metrics``.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from localearn.errors import ConfigError
from localearn.measure.carbon import CarbonTracker
from localearn.measure.nvml import NvmlGpu, open_gpu
from localearn.measure.rapl import DEFAULT_ROOT, RaplReader, split_domains

TRAINING_PHASES = ("warmup", "train")
SHORT_NOTE = (
    "windows shorter than {s:g} s are flagged: the NVML counter updates about every "
    "100 ms, so a short window's energy is uncertain; read the per-unit and per-phase sums"
)


def trapezoid_energy(
    times: list[float], watts: list[float], t0: float | None = None, t1: float | None = None
) -> float | None:
    """Joules under a sampled power curve between ``t0`` and ``t1`` (trapezoid rule).

    Power at the window edges is linearly interpolated between the neighbouring samples (held
    constant beyond the first or last sample). Returns None when there are no samples.
    """
    if not times:
        return None
    t0 = times[0] if t0 is None else t0
    t1 = times[-1] if t1 is None else t1
    if t1 <= t0:
        return 0.0

    def at(t: float) -> float:
        i = bisect.bisect_left(times, t)
        if i == 0:
            return watts[0]
        if i >= len(times):
            return watts[-1]
        ta, tb = times[i - 1], times[i]
        return (
            watts[i - 1] + (watts[i] - watts[i - 1]) * (t - ta) / (tb - ta) if tb > ta else watts[i]
        )

    lo, hi = bisect.bisect_right(times, t0), bisect.bisect_left(times, t1)
    ts = [t0, *times[lo:hi], t1]
    ws = [at(t0), *watts[lo:hi], at(t1)]
    return sum((ts[k + 1] - ts[k]) * (ws[k + 1] + ws[k]) / 2 for k in range(len(ts) - 1))


@dataclass
class _Samples:
    """Poller output: time, power (W), GPU utilisation (%), SM clock (MHz)."""

    t: list[float] = field(default_factory=list)
    w: list[float] = field(default_factory=list)
    util: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)

    def window(self, t0: float, t1: float) -> tuple[int, int]:
        return bisect.bisect_left(self.t, t0), bisect.bisect_right(self.t, t1)


class _Poller(threading.Thread):
    """Samples GPU power (and utilisation, clock) at ``hz`` and keeps RAPL from wrapping twice."""

    def __init__(self, gpu: NvmlGpu | None, rapl: RaplReader | None, hz: float) -> None:
        super().__init__(name="localearn-energy-poller", daemon=True)
        self.gpu, self.rapl, self.period = gpu, rapl, 1.0 / hz
        self.samples = _Samples()
        self.lock = threading.Lock()
        self._halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        next_rapl = 0.0
        while not self._halt.is_set():
            now = time.perf_counter()
            try:
                if self.gpu is not None:
                    w, util, clock = self.gpu.power_w(), self.gpu.utilization(), self.gpu.sm_clock()
                    with self.lock:
                        self.samples.t.append(now)
                        self.samples.w.append(w)
                        self.samples.util.append(util if util is not None else float("nan"))
                        self.samples.clock.append(clock if clock is not None else float("nan"))
                if self.rapl is not None and now >= next_rapl:
                    self.rapl.sample()
                    next_rapl = now + 1.0
            except Exception as exc:  # a sampler must not kill the run; the report says so
                self.errors.append(repr(exc))
                if len(self.errors) > 20:
                    return
            self._halt.wait(max(0.0, self.period - (time.perf_counter() - now)))

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@dataclass
class _Window:
    phase: str
    unit: str | None
    t0: float
    t1: float
    gpu_j: float | None = None
    cpu_j: dict[str, float] = field(default_factory=dict)
    n: int = 0
    sum_w: float = 0.0
    max_w: float = 0.0
    sum_util: float = 0.0
    sum_clock: float = 0.0


class EnergyProbe:
    """GPU (NVML) and CPU (RAPL) energy per phase and per training unit, plus optional CO2e.

    Args:
        device: the training device; None takes the trainer's (via :meth:`attach`).
        idle_seconds: length of the idle baseline before the first window (0 skips it).
        poll_hz: power-poll rate (>= 5 Hz, the protocol's floor).
        country: ISO 3166-1 code for CodeCarbon's CO2e estimate; None means no CO2e.
        rapl_root: the powercap directory (tests pass a fake tree).
        min_window_s: windows shorter than this are flagged.
        nvml: the NVML module (``pynvml``; tests pass a fake).
    """

    def __init__(
        self,
        device: torch.device | str | None = None,
        idle_seconds: float = 10.0,
        poll_hz: float = 10.0,
        country: str | None = None,
        rapl_root: str | Path = DEFAULT_ROOT,
        min_window_s: float = 5.0,
        nvml: Any = None,
    ) -> None:
        if poll_hz < 5:
            raise ConfigError(f"poll_hz must be >= 5 (STUDY_PROTOCOL Rule 3), got {poll_hz}")
        if idle_seconds < 0:
            raise ConfigError(f"idle_seconds must be >= 0, got {idle_seconds}")
        self.device = torch.device(device) if device is not None else None
        self.idle_seconds, self.poll_hz, self.min_window_s = (
            float(idle_seconds),
            float(poll_hz),
            min_window_s,
        )
        self.rapl_root, self._nvml = Path(rapl_root), nvml
        # Validate the country now so that a bad code fails before any training.
        self.carbon = CarbonTracker(country) if country is not None else None
        self.meter: Any = None
        self.gpu: NvmlGpu | None = None
        self.gpu_reason: str | None = None
        self.rapl: RaplReader | None = None
        self.poller: _Poller | None = None
        self.windows: list[_Window] = []
        self._open: dict[str, tuple[float, str | None, float | None, dict[str, int]]] = {}
        self._begun = False
        self.baseline: dict[str, Any] = {}
        self._foreign: set[int] = set()
        self.process_memory_peak: int | None = None
        self.context_bytes: int | None = None
        self.start_temperature: float | None = None
        self._report: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------- set-up
    def attach(self, meter: Any) -> None:
        """Called by :class:`PhaseMeter`: gives the device and the current training unit."""
        self.meter = meter
        if self.device is None and meter.device is not None:
            self.device = torch.device(meter.device)

    def begin(self) -> None:
        """Open the meters and measure the idle baseline (called by the first window if not
        before; call it yourself after building the model to keep the wait out of set-up)."""
        if self._begun:
            return
        self._begun = True
        device = self.device or torch.device("cpu")
        if device.type == "cuda":
            self.gpu, self.gpu_reason = open_gpu(device, self._nvml)
        else:
            self.gpu_reason = f"the run used the {device.type.upper()}, not a GPU"
        self.rapl = RaplReader(self.rapl_root)
        if not self.rapl.available:
            self.rapl = None
        if self.gpu is not None:
            self.start_temperature = self.gpu.temperature()  # before the idle wait (Rule 3)
            self._check_processes()
            self.context_bytes = self._cuda_context_bytes(device)
        if self.gpu is not None or self.rapl is not None:
            self.poller = _Poller(self.gpu, self.rapl, self.poll_hz)
            self.poller.start()
            self._measure_baseline()
        else:
            self.baseline = {
                "status": "not_measured",
                "reason": "no energy meter on this machine (no GPU counter, no RAPL)",
            }
        if self.carbon is not None:
            self.carbon.start()  # after the baseline: CO2e covers the run, not the idle wait

    def _measure_baseline(self) -> None:
        if self.idle_seconds <= 0:
            self.baseline = {"status": "skipped", "reason": "idle_seconds=0"}
            return
        t0, e0 = time.perf_counter(), self._gpu_counter_j()
        r0 = self.rapl.totals_uj() if self.rapl else {}
        time.sleep(self.idle_seconds)
        t1, e1 = time.perf_counter(), self._gpu_counter_j()
        r1 = self.rapl.totals_uj() if self.rapl else {}
        dt = t1 - t0
        base: dict[str, Any] = {"status": "measured", "seconds": dt}
        if self.gpu is not None:
            joules = e1 - e0 if e0 is not None and e1 is not None else self._poll_energy(t0, t1)
            base["gpu_idle_w"] = joules / dt if joules is not None else None
            base["gpu_temperature_c_after"] = self.gpu.temperature()
        if self.rapl is not None:
            cpu = split_domains({k: r1[k] - r0.get(k, 0) for k in r1}, self.rapl.domain_names())
            base["cpu_idle_w"] = {k: v / dt for k, v in cpu.items()}
        self.baseline = base

    def _cuda_context_bytes(self, device: torch.device) -> int | None:
        used = self.gpu.process_memory() if self.gpu is not None else None
        if used is None or not torch.cuda.is_available():
            return None
        return max(0, used - int(torch.cuda.memory_reserved(device)))

    def _check_processes(self) -> None:
        if self.gpu is None:
            return
        foreign = self.gpu.foreign_pids()
        if foreign:
            self._foreign.update(foreign)
        used = self.gpu.process_memory()
        if used is not None:
            self.process_memory_peak = max(self.process_memory_peak or 0, used)

    # ---------------------------------------------------------------------------- windows
    def _gpu_counter_j(self) -> float | None:
        if self.gpu is None or self.gpu.energy_method != "nvml_energy_counter":
            return None
        mj = self.gpu.energy_mj()
        return mj / 1000.0 if mj is not None else None

    def _poll_energy(self, t0: float, t1: float) -> float | None:
        if self.poller is None:
            return None
        with self.poller.lock:
            return trapezoid_energy(
                list(self.poller.samples.t), list(self.poller.samples.w), t0, t1
            )

    def start(self, phase: str) -> None:
        self.begin()
        unit = getattr(self.meter, "unit", None)
        rapl = self.rapl.totals_uj() if self.rapl else {}
        self._open[phase] = (time.perf_counter(), unit, self._gpu_counter_j(), rapl)

    def stop(self, phase: str) -> None:
        if phase not in self._open:
            return
        t0, unit, e0, r0 = self._open.pop(phase)
        e1 = self._gpu_counter_j()
        r1 = self.rapl.totals_uj() if self.rapl else {}
        t1 = time.perf_counter()
        win = _Window(phase, unit, t0, t1)
        if self.gpu is not None:
            if self.gpu.energy_method == "nvml_energy_counter":
                win.gpu_j = e1 - e0 if e0 is not None and e1 is not None else None
            else:
                win.gpu_j = self._poll_energy(t0, t1)
            if self.poller is not None:
                with self.poller.lock:
                    s = self.poller.samples
                    a, b = s.window(t0, t1)
                    ws = s.w[a:b]
                    win.n, win.sum_w, win.max_w = len(ws), sum(ws), max(ws, default=0.0)
                    win.sum_util = sum(u for u in s.util[a:b] if u == u)
                    win.sum_clock = sum(c for c in s.clock[a:b] if c == c)
            self._check_processes()
        if self.rapl is not None:
            win.cpu_j = split_domains(
                {k: r1[k] - r0.get(k, 0) for k in r1}, self.rapl.domain_names()
            )
        self.windows.append(win)

    # ---------------------------------------------------------------------------- report
    def close(self) -> None:
        """Stop the poller and release NVML (idempotent)."""
        if self.poller is not None:
            self.poller.halt()
        if self.gpu is not None:
            self.gpu.close()

    def report(self) -> dict[str, Any]:
        """``{"energy": {...}, "gpu_memory": {...}}`` for ``run.json`` ``metrics``."""
        if self._report is not None:
            return self._report
        self.begin()
        co2e = (
            self.carbon.stop()
            if self.carbon is not None
            else {
                "method": "not_requested",
                "reason": "no --country given (CO2e needs an explicit country)",
            }
        )
        from localearn.measure.energy_report import build_report

        self._report = build_report(self, co2e)
        self.close()
        return self._report

    # Helpers the report builder reads.
    @property
    def foreign_pids(self) -> list[int]:
        return sorted(self._foreign)

    @property
    def own_pid(self) -> int:
        return os.getpid()
