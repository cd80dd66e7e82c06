"""The ``run.json`` energy block built from an energy probe's windows, and the CLI's lines.

Reference: docs/concepts/protocol.md#rule-3: a method label on every number; raw and idle-adjusted joules;
training cost = ``warmup`` + ``train`` windows; short windows flagged; "cannot attribute" instead
of a number on a MIG slice or a shared GPU. This module reads the probe's attributes and imports
nothing from :mod:`localearn.measure.energy`, so the two do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRAINING = ("warmup", "train")


@dataclass
class Window:
    """One metered window: GPU joules (counter), CPU joules per RAPL domain, edge samples."""

    phase: str
    unit: str | None
    seconds: float
    gpu_j: float | None = None
    cpu_j: dict[str, float] = field(default_factory=dict)
    power_w: list[float] = field(default_factory=list)
    util: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _group(ws: list[Window], joules: Callable[[Window], float | None], idle_w: float | None,
           min_window_s: float, gpu: bool) -> dict[str, Any]:
    """Joules, idle-adjusted joules, seconds and window counts over ``ws`` (GPU: power stats)."""
    seconds, js = sum(w.seconds for w in ws), [joules(w) for w in ws]
    total = None if any(j is None for j in js) else float(sum(j for j in js if j is not None))
    out: dict[str, Any] = {
        "joules": total,
        "adjusted_joules": total - idle_w * seconds if total is not None and idle_w is not None else None,
        "seconds": seconds, "windows": len(ws), "short_windows": sum(w.seconds < min_window_s for w in ws),
    }
    if gpu:  # mean power from the counter; peak, utilisation and clock sampled at window edges
        power = [p for w in ws for p in w.power_w]
        out.update(mean_power_w=total / seconds if total is not None and seconds > 0 else None,
                   peak_power_w=max(power, default=None),
                   mean_utilization_pct=_mean([u for w in ws for u in w.util]),
                   mean_sm_clock_mhz=_mean([c for w in ws for c in w.clock]), power_samples=len(power))
    return out


def _breakdown(probe: Any, joules: Callable[[Window], float | None], idle_w: float | None, gpu: bool) -> dict[str, Any]:
    def group(ws: list[Window]) -> dict[str, Any]:
        return _group(ws, joules, idle_w, probe.min_window_s, gpu)

    wins: list[Window] = probe.windows
    phases = list(dict.fromkeys(w.phase for w in wins))
    per_unit = {}
    for u in dict.fromkeys(w.unit for w in wins if w.unit is not None):
        mine = [w for w in wins if w.unit == u]
        per_unit[u] = {"training": group([w for w in mine if w.phase in TRAINING]),
                       **{ph: group([w for w in mine if w.phase == ph]) for ph in dict.fromkeys(w.phase for w in mine)}}
    train, total = group([w for w in wins if w.phase in TRAINING]), group(wins)
    return {
        "train_joules": train["joules"], "train_adjusted_joules": train["adjusted_joules"],  # cost: Rule 3
        "total_joules": total["joules"], "total_adjusted_joules": total["adjusted_joules"],
        "idle_w": idle_w, "training": train,
        "per_phase": {ph: group([w for w in wins if w.phase == ph]) for ph in phases}, "per_unit": per_unit,
    }


def _not_measured(reason: str | None) -> dict[str, Any]:
    return {"method": "not_measured", "status": "not_measured", "reason": reason}


def _gpu_section(probe: Any) -> dict[str, Any]:
    if probe.gpu is None:
        return _not_measured(probe.gpu_reason)
    info = {**probe.gpu.info(), "temperature_c_start": probe.start_temperature}
    section: dict[str, Any] = {"scope": "GPU board only (not CPU, DRAM, PSU or cooling)", "device": info}
    unattributable = {**section, "method": "cannot_attribute", "status": "cannot_attribute"}
    if info.get("mig_enabled"):
        return {**unattributable, "reason": "the GPU is a MIG slice (or MIG mode is on): its energy counter "
                "covers the whole board, so this run's share cannot be attributed"}
    if probe.foreign:
        pids = sorted(probe.foreign)
        return {**unattributable, "other_pids": pids, "reason": f"other processes used the GPU during the "
                f"run (PIDs {pids}); the board's energy cannot be attributed to this run"}
    if probe.gpu_reason is not None:
        return {**section, **_not_measured(probe.gpu_reason)}
    return {**section, "method": "nvml_energy_counter", "status": "measured",
            **_breakdown(probe, lambda w: w.gpu_j, probe.baseline.get("gpu_idle_w"), True)}


def _cpu_section(probe: Any) -> dict[str, Any]:
    if probe.rapl is None:
        return _not_measured(probe.cpu_reason)
    idle = probe.baseline.get("cpu_idle_w")
    idle_w = sum(idle.values()) if isinstance(idle, dict) else None
    per_domain: dict[str, float] = {}
    for w in probe.windows:
        for dom, j in w.cpu_j.items():
            per_domain[dom] = per_domain.get(dom, 0.0) + j
    return {"method": "rapl", "status": "measured",
            "scope": "CPU package(s) + DRAM, whole machine (every process on the socket)",
            "domains": sorted({z.name for z in probe.rapl.zones}),
            **_breakdown(probe, lambda w: sum(w.cpu_j.values()), idle_w, False),
            "per_domain_joules": per_domain}


def build_report(probe: Any, co2e: dict[str, Any]) -> dict[str, Any]:
    """``{"energy": ..., "gpu_memory": ...}`` from an :class:`~localearn.measure.energy.EnergyProbe`."""
    gpu, cpu = _gpu_section(probe), _cpu_section(probe)
    head = gpu if probe.on_gpu else cpu
    energy: dict[str, Any] = {"method": head["method"], "scope": head.get("scope", "GPU" if probe.on_gpu else "CPU"),
                              **{k: head.get(k) for k in ("train_joules", "train_adjusted_joules", "total_joules")}}
    if head["status"] != "measured":
        energy["reason"] = head["reason"] if probe.on_gpu else f"{head['reason']}; no GPU in this run"
    energy.update(
        gpu=gpu, cpu=cpu, baseline=probe.baseline, co2e=co2e, windows=len(probe.windows),
        short_window_rule=f"windows shorter than {probe.min_window_s:g} s are counted in "
        "'short_windows': a counter updated every ~100 ms cannot resolve them; read the sums",
        adjusted="adjusted_joules = raw joules - idle W x window seconds (idle baseline measured before the run)")
    metered = sum(getattr(probe.meter, "windows", {}).values()) if probe.meter is not None else 0
    if metered > len(probe.windows):
        energy["partial"] = (f"only {len(probe.windows)} of {metered} metered windows were seen "
                             "by this probe (a resumed run): energy covers this process's part only")
    memory: dict[str, Any] = {"method": "not_measured", "reason": probe.gpu_reason}
    if probe.gpu is not None:
        memory = {"nvml_process_peak_bytes": probe.process_memory_peak, "cuda_context_bytes": probe.context_bytes,
                  "method": "nvmlDeviceGetComputeRunningProcesses usedGpuMemory at window edges "
                  "(peak); context = NVML process memory - torch.cuda.memory_reserved before training"}
    return {"energy": energy, "gpu_memory": memory}


def _kj(j: float | None) -> str:
    return "n/a" if j is None else (f"{j / 1000:.2f} kJ" if abs(j) >= 1000 else f"{j:.1f} J")


def format_energy(energy: dict[str, Any] | None) -> list[str]:
    """Summary lines for the CLI: headline, per phase, per unit, CO2e, each with its method."""
    if not energy:
        return []
    method = energy.get("method", "not_measured")
    if method in ("not_measured", "cannot_attribute"):
        lines = [f"  energy               {method.replace('_', ' ')} ({energy.get('reason', 'no meter')})"]
    else:
        lines = [f"  energy (train)       {_kj(energy.get('train_joules'))} raw, "
                 f"{_kj(energy.get('train_adjusted_joules'))} idle-adjusted  [{method}; {energy.get('scope', '')}]"]
        head = energy.get("gpu") if method.startswith("nvml") else energy.get("cpu")
        if head:
            idle = head.get("idle_w")
            lines.append(f"  energy (all windows) {_kj(head.get('total_joules'))} raw; idle "
                         + ("n/a" if idle is None else f"{idle:.1f} W"))
            for ph, g in head.get("per_phase", {}).items():
                short = f", {g['short_windows']} short" if g.get("short_windows") else ""
                lines.append(f"    {ph:<18} {_kj(g['joules']):>10} over {g['seconds']:.1f} s "
                             f"({g['windows']} windows{short})")
            lines += [f"    unit {unit:<13} {_kj(g['training']['joules']):>10} training"
                      for unit, g in head.get("per_unit", {}).items()]
    if method.startswith("nvml") and energy.get("cpu", {}).get("status") == "measured":
        lines.append(f"  CPU energy (RAPL)    {_kj(energy['cpu'].get('train_joules'))} train, whole machine")
    co2e = energy.get("co2e") or {}
    if co2e.get("status") == "estimated":
        lines.append(f"  CO2e                 {co2e['kg_co2e'] * 1000:.4f} g  [{co2e['method']}, "
                     f"{co2e['country_iso_code']}]")
    elif co2e.get("status") == "failed":
        lines.append(f"  CO2e                 failed: {co2e.get('reason')}")
    return lines
