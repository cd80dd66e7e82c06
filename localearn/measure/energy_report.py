"""Turns an :class:`~localearn.measure.energy.EnergyProbe`'s windows into the run.json block.

Reference: STUDY_PROTOCOL.md Rule 3 (method label on every number; raw and baseline-adjusted
energy; training cost = ``warmup`` + ``train`` windows; short windows flagged; "cannot attribute"
instead of a number on a MIG slice or a shared GPU). Kept apart from the probe so that the
probe file holds only what runs during training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localearn.measure.energy import EnergyProbe, _Window

TRAINING = ("warmup", "train")


def _sum(values: list[float | None]) -> float | None:
    return (
        None if any(v is None for v in values) else float(sum(v for v in values if v is not None))
    )


def _group(
    windows: list[_Window],
    joules: Callable[[_Window], float | None],
    idle_w: float | None,
    min_window_s: float,
    gpu_stats: bool,
) -> dict[str, Any]:
    """Joules, adjusted joules, seconds, window counts (and GPU power stats) over ``windows``."""
    seconds = sum(w.t1 - w.t0 for w in windows)
    total = _sum([joules(w) for w in windows])
    out: dict[str, Any] = {
        "joules": total,
        "adjusted_joules": total - idle_w * seconds
        if total is not None and idle_w is not None
        else None,
        "seconds": seconds,
        "windows": len(windows),
        "short_windows": sum(1 for w in windows if w.t1 - w.t0 < min_window_s),
    }
    if gpu_stats:
        n = sum(w.n for w in windows)
        out["mean_power_w"] = sum(w.sum_w for w in windows) / n if n else None
        out["peak_power_w"] = max((w.max_w for w in windows if w.n), default=None)
        out["mean_utilization_pct"] = sum(w.sum_util for w in windows) / n if n else None
        out["mean_sm_clock_mhz"] = sum(w.sum_clock for w in windows) / n if n else None
        out["power_samples"] = n
    return out


def _breakdown(
    p: EnergyProbe, joules: Callable[[_Window], float | None], idle_w: float | None, gpu_stats: bool
) -> dict[str, Any]:
    phases = list(dict.fromkeys(w.phase for w in p.windows))
    units = list(dict.fromkeys(w.unit for w in p.windows if w.unit is not None))

    def group(ws: list[_Window]) -> dict[str, Any]:
        return _group(ws, joules, idle_w, p.min_window_s, gpu_stats)

    train = group([w for w in p.windows if w.phase in TRAINING])
    total = group(p.windows)
    return {
        "train_joules": train["joules"],  # training cost: warmup + train windows (Rule 3)
        "train_adjusted_joules": train["adjusted_joules"],
        "total_joules": total["joules"],
        "total_adjusted_joules": total["adjusted_joules"],
        "idle_w": idle_w,
        "training": train,
        "per_phase": {ph: group([w for w in p.windows if w.phase == ph]) for ph in phases},
        "per_unit": {
            u: {
                "training": group([w for w in p.windows if w.unit == u and w.phase in TRAINING]),
                **{
                    ph: group([w for w in p.windows if w.unit == u and w.phase == ph])
                    for ph in phases
                    if any(w.unit == u and w.phase == ph for w in p.windows)
                },
            }
            for u in units
        },
    }


def _gpu_section(p: EnergyProbe) -> dict[str, Any]:
    if p.gpu is None:
        return {"method": "not_measured", "status": "not_measured", "reason": p.gpu_reason}
    info = p.gpu.info()
    info["temperature_c_start"] = p.start_temperature
    section: dict[str, Any] = {
        "scope": "GPU board only (not CPU, DRAM, PSU or cooling)",
        "device": info,
    }
    if info.get("mig_enabled"):
        return {
            **section,
            "method": "cannot_attribute",
            "status": "cannot_attribute",
            "reason": "the GPU is a MIG slice (or MIG mode is on): its energy counter covers the "
            "whole board, so this run's share cannot be attributed",
        }
    if p.foreign_pids:
        return {
            **section,
            "method": "cannot_attribute",
            "status": "cannot_attribute",
            "other_pids": p.foreign_pids,
            "reason": f"other processes used the GPU during the run (PIDs {p.foreign_pids}); "
            "the board's energy cannot be attributed to this run",
        }
    method = (
        p.gpu.energy_method
        if p.gpu.energy_method == "nvml_energy_counter"
        else f"nvml_power_poll@{p.poll_hz:g}Hz"
    )
    idle = p.baseline.get("gpu_idle_w")
    section.update(method=method, status="measured", **_breakdown(p, lambda w: w.gpu_j, idle, True))
    if p.gpu.energy_reason:
        section["fallback_reason"] = p.gpu.energy_reason
    if p.poller is not None and p.poller.errors:
        section["poller_errors"] = p.poller.errors[:5]
    return section


def _cpu_section(p: EnergyProbe) -> dict[str, Any]:
    if p.rapl is None:
        from localearn.measure.rapl import discover_zones

        _, reason = discover_zones(p.rapl_root)
        return {"method": "not_measured", "status": "not_measured", "reason": f"RAPL: {reason}"}
    idle = p.baseline.get("cpu_idle_w")
    idle_total = sum(idle.values()) if isinstance(idle, dict) else None
    section: dict[str, Any] = {
        "method": "rapl",
        "status": "measured",
        "scope": "CPU package(s) + DRAM, whole machine (every process on the socket)",
        "domains": sorted(set(p.rapl.domain_names().values())),
        **_breakdown(p, lambda w: sum(w.cpu_j.values()) if w.cpu_j else 0.0, idle_total, False),
    }
    per_domain: dict[str, float] = {}
    for w in p.windows:
        for dom, j in w.cpu_j.items():
            per_domain[dom] = per_domain.get(dom, 0.0) + j
    section["per_domain_joules"] = per_domain
    return section


def build_report(p: EnergyProbe, co2e: dict[str, Any]) -> dict[str, Any]:
    """``{"energy": ..., "gpu_memory": ...}`` for ``run.json`` ``metrics``."""
    gpu, cpu = _gpu_section(p), _cpu_section(p)
    on_gpu = p.device is not None and p.device.type == "cuda"
    head = gpu if on_gpu else cpu
    energy: dict[str, Any] = {
        "method": head["method"],
        "scope": head.get("scope", "GPU" if on_gpu else "CPU"),
        "train_joules": head.get("train_joules"),
        "train_adjusted_joules": head.get("train_adjusted_joules"),
        "total_joules": head.get("total_joules"),
    }
    if head["status"] != "measured":
        energy["reason"] = head["reason"] if on_gpu else f"{head['reason']}; no GPU in this run"
    energy.update(
        gpu=gpu,
        cpu=cpu,
        baseline=p.baseline,
        co2e=co2e,
        windows=len(p.windows),
        short_window_rule=f"windows shorter than {p.min_window_s:g} s are counted in "
        "'short_windows': a counter updated every ~100 ms cannot resolve them; read the sums",
        adjusted="adjusted_joules = raw joules - idle W x window seconds "
        "(idle baseline measured before the run)",
    )
    metered = (
        sum(getattr(p.meter, "windows", {}).values()) if p.meter is not None else len(p.windows)
    )
    if metered > len(p.windows):
        energy["partial"] = (
            f"only {len(p.windows)} of {metered} metered windows were seen by this "
            "probe (a resumed run): energy covers this process's part only"
        )
    memory: dict[str, Any] = (
        {
            "nvml_process_peak_bytes": p.process_memory_peak,
            "cuda_context_bytes": p.context_bytes,
            "method": (
                "nvmlDeviceGetComputeRunningProcesses usedGpuMemory at window edges (peak); "
                "context = NVML process memory - torch.cuda.memory_reserved before training"
            ),
        }
        if p.gpu is not None
        else {"method": "not_measured", "reason": p.gpu_reason}
    )
    return {"energy": energy, "gpu_memory": memory}


def _kj(j: float | None) -> str:
    return "n/a" if j is None else (f"{j / 1000:.2f} kJ" if abs(j) >= 1000 else f"{j:.1f} J")


def format_energy(energy: dict[str, Any] | None) -> list[str]:
    """Summary lines for the CLI: headline, per phase, per unit, CO2e, each with its method."""
    if not energy:
        return []
    method = energy.get("method", "not_measured")
    if method in ("not_measured", "cannot_attribute"):
        reason = energy.get("reason", "no meter")
        lines = [f"  energy               {method.replace('_', ' ')} ({reason})"]
    else:
        lines = [
            f"  energy (train)       {_kj(energy.get('train_joules'))} raw, "
            f"{_kj(energy.get('train_adjusted_joules'))} idle-adjusted  [{method}; "
            f"{energy.get('scope', '')}]"
        ]
        head = energy.get("gpu") if method.startswith("nvml") else energy.get("cpu")
        if head:
            idle = head.get("idle_w")
            lines.append(
                f"  energy (all windows) {_kj(head.get('total_joules'))} raw; idle "
                + ("n/a" if idle is None else f"{idle:.1f} W")
            )
            for ph, g in head.get("per_phase", {}).items():
                short = f", {g['short_windows']} short" if g.get("short_windows") else ""
                lines.append(
                    f"    {ph:<18} {_kj(g['joules']):>10} over {g['seconds']:.1f} s "
                    f"({g['windows']} windows{short})"
                )
            for unit, g in head.get("per_unit", {}).items():
                lines.append(f"    unit {unit:<13} {_kj(g['training']['joules']):>10} training")
    if method.startswith("nvml") and energy.get("cpu", {}).get("status") == "measured":
        lines.append(
            f"  CPU energy (RAPL)    {_kj(energy['cpu'].get('train_joules'))} train, whole machine"
        )
    co2e = energy.get("co2e") or {}
    if co2e.get("status") == "estimated":
        lines.append(
            f"  CO2e                 {co2e['kg_co2e'] * 1000:.4f} g  [{co2e['method']}, "
            f"{co2e['country_iso_code']}]"
        )
    elif co2e.get("status") == "failed":
        lines.append(f"  CO2e                 failed: {co2e.get('reason')}")
    return lines
