"""Turns the energy probe's metered windows into the ``run.json`` block, and the CLI lines.

Reference: STUDY_PROTOCOL.md Rule 3 (method label on every number; raw and baseline-adjusted
energy; training cost = ``warmup`` + ``train`` windows; short windows flagged; "cannot attribute"
instead of a number on a MIG slice or a shared GPU). This module reads a :class:`Readings` and
imports nothing from the probe, so the two files do not import each other.
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


@dataclass
class Readings:
    """What the probe measured; :func:`build_report` needs nothing else."""

    on_gpu: bool
    windows: list[Window]
    baseline: dict[str, Any]
    min_window_s: float
    metered_windows: int
    gpu_info: dict[str, Any] | None = None  # None: no GPU reader
    gpu_reason: str | None = None  # why GPU energy is not measured (reader absent or no counter)
    foreign_pids: list[int] = field(default_factory=list)
    cpu_domains: list[str] | None = None  # None: CPU energy not measured
    cpu_reason: str | None = None
    gpu_memory: dict[str, Any] = field(default_factory=dict)


def _group(ws: list[Window], joules: Callable[[Window], float | None], idle_w: float | None,
           r: Readings, gpu: bool) -> dict[str, Any]:
    """Joules, adjusted joules, seconds, window counts (and GPU power stats) over ``ws``."""
    seconds = sum(w.seconds for w in ws)
    js = [joules(w) for w in ws]
    total = None if any(j is None for j in js) else float(sum(j for j in js if j is not None))
    out: dict[str, Any] = {
        "joules": total,
        "adjusted_joules": total - idle_w * seconds if total is not None and idle_w is not None else None,
        "seconds": seconds,
        "windows": len(ws),
        "short_windows": sum(1 for w in ws if w.seconds < r.min_window_s),
    }
    if gpu:  # mean power from the counter; peak, utilisation and clock sampled at window edges
        power = [p for w in ws for p in w.power_w]
        util = [u for w in ws for u in w.util]
        clock = [c for w in ws for c in w.clock]
        out["mean_power_w"] = total / seconds if total is not None and seconds > 0 else None
        out["peak_power_w"] = max(power, default=None)
        out["mean_utilization_pct"] = sum(util) / len(util) if util else None
        out["mean_sm_clock_mhz"] = sum(clock) / len(clock) if clock else None
        out["power_samples"] = len(power)
    return out


def _breakdown(r: Readings, joules: Callable[[Window], float | None], idle_w: float | None,
               gpu: bool) -> dict[str, Any]:
    def group(ws: list[Window]) -> dict[str, Any]:
        return _group(ws, joules, idle_w, r, gpu)

    phases = list(dict.fromkeys(w.phase for w in r.windows))
    units = list(dict.fromkeys(w.unit for w in r.windows if w.unit is not None))
    train, total = group([w for w in r.windows if w.phase in TRAINING]), group(r.windows)
    per_unit = {}
    for u in units:
        mine = [w for w in r.windows if w.unit == u]
        per_unit[u] = {"training": group([w for w in mine if w.phase in TRAINING]),
                       **{ph: group([w for w in mine if w.phase == ph])
                          for ph in phases if any(w.phase == ph for w in mine)}}
    return {
        "train_joules": train["joules"],  # training cost: warmup + train windows (Rule 3)
        "train_adjusted_joules": train["adjusted_joules"],
        "total_joules": total["joules"],
        "total_adjusted_joules": total["adjusted_joules"],
        "idle_w": idle_w,
        "training": train,
        "per_phase": {ph: group([w for w in r.windows if w.phase == ph]) for ph in phases},
        "per_unit": per_unit,
    }


def _not_measured(reason: str | None, **extra: Any) -> dict[str, Any]:
    return {"method": "not_measured", "status": "not_measured", "reason": reason, **extra}


def _gpu_section(r: Readings) -> dict[str, Any]:
    if r.gpu_info is None:
        return _not_measured(r.gpu_reason)
    section: dict[str, Any] = {"scope": "GPU board only (not CPU, DRAM, PSU or cooling)", "device": r.gpu_info}
    unattributable = {"method": "cannot_attribute", "status": "cannot_attribute"}
    if r.gpu_info.get("mig_enabled"):
        return {**section, **unattributable,
                "reason": "the GPU is a MIG slice (or MIG mode is on): its energy counter covers the "
                "whole board, so this run's share cannot be attributed"}
    if r.foreign_pids:
        return {**section, **unattributable, "other_pids": r.foreign_pids,
                "reason": f"other processes used the GPU during the run (PIDs {r.foreign_pids}); "
                "the board's energy cannot be attributed to this run"}
    if r.gpu_reason is not None:
        return {**section, **_not_measured(r.gpu_reason)}
    idle = r.baseline.get("gpu_idle_w")
    return {**section, "method": "nvml_energy_counter", "status": "measured",
            **_breakdown(r, lambda w: w.gpu_j, idle, True)}


def _cpu_section(r: Readings) -> dict[str, Any]:
    if r.cpu_domains is None:
        return _not_measured(r.cpu_reason)
    idle = r.baseline.get("cpu_idle_w")
    per_domain: dict[str, float] = {}
    for w in r.windows:
        for dom, j in w.cpu_j.items():
            per_domain[dom] = per_domain.get(dom, 0.0) + j
    return {
        "method": "rapl", "status": "measured",
        "scope": "CPU package(s) + DRAM, whole machine (every process on the socket)",
        "domains": r.cpu_domains,
        **_breakdown(r, lambda w: sum(w.cpu_j.values()), sum(idle.values()) if isinstance(idle, dict) else None,
                     False),
        "per_domain_joules": per_domain,
    }


def build_report(r: Readings, co2e: dict[str, Any]) -> dict[str, Any]:
    """``{"energy": ..., "gpu_memory": ...}`` for ``run.json`` ``metrics``."""
    gpu, cpu = _gpu_section(r), _cpu_section(r)
    head = gpu if r.on_gpu else cpu
    energy: dict[str, Any] = {
        "method": head["method"],
        "scope": head.get("scope", "GPU" if r.on_gpu else "CPU"),
        **{k: head.get(k) for k in ("train_joules", "train_adjusted_joules", "total_joules")},
    }
    if head["status"] != "measured":
        energy["reason"] = head["reason"] if r.on_gpu else f"{head['reason']}; no GPU in this run"
    energy.update(
        gpu=gpu, cpu=cpu, baseline=r.baseline, co2e=co2e, windows=len(r.windows),
        short_window_rule=f"windows shorter than {r.min_window_s:g} s are counted in "
        "'short_windows': a counter updated every ~100 ms cannot resolve them; read the sums",
        adjusted="adjusted_joules = raw joules - idle W x window seconds "
        "(idle baseline measured before the run)",
    )
    if r.metered_windows > len(r.windows):
        energy["partial"] = (f"only {len(r.windows)} of {r.metered_windows} metered windows were seen "
                             "by this probe (a resumed run): energy covers this process's part only")
    return {"energy": energy, "gpu_memory": r.gpu_memory}


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
            for unit, g in head.get("per_unit", {}).items():
                lines.append(f"    unit {unit:<13} {_kj(g['training']['joules']):>10} training")
    if method.startswith("nvml") and energy.get("cpu", {}).get("status") == "measured":
        lines.append(f"  CPU energy (RAPL)    {_kj(energy['cpu'].get('train_joules'))} train, whole machine")
    co2e = energy.get("co2e") or {}
    if co2e.get("status") == "estimated":
        lines.append(f"  CO2e                 {co2e['kg_co2e'] * 1000:.4f} g  [{co2e['method']}, "
                     f"{co2e['country_iso_code']}]")
    elif co2e.get("status") == "failed":
        lines.append(f"  CO2e                 failed: {co2e.get('reason')}")
    return lines
