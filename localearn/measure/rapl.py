"""CPU package and DRAM energy from Intel RAPL through the Linux powercap interface.

Reference: Intel SDM Vol. 3B §15.10 (RAPL); Linux ``Documentation/power/powercap``. Each zone
``<root>/intel-rapl:<i>[:<j>]`` has ``name``, ``energy_uj`` (µJ, wraps to 0 after
``max_energy_range_uj``). Only ``package-*`` and ``dram`` zones are summed (``core``/``uncore`` lie
inside the package, ``psys`` covers the platform). Read at window edges: one wrap per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplZone:
    """One readable RAPL zone."""

    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def counter_delta(start_uj: int, end_uj: int, max_range_uj: int) -> int:
    """Energy between two reads of a counter that wraps to 0 after ``max_range_uj`` (one wrap)."""
    return end_uj - start_uj if end_uj >= start_uj else end_uj + (max_range_uj - start_uj)


def discover_zones(root: str | Path = DEFAULT_ROOT) -> tuple[list[RaplZone], str | None]:
    """The readable package and DRAM zones under ``root``, or ([], the reason there are none)."""
    root = Path(root)
    if not root.is_dir():
        return [], f"no powercap directory at {root} (kernel without intel_rapl, not Linux, or a VM)"
    candidates = sorted(p for p in root.glob("intel-rapl:*") if p.is_dir())
    if not candidates:
        return [], f"no intel-rapl zones under {root} (no RAPL on this CPU, or a VM that hides it)"
    zones: list[RaplZone] = []
    problems: list[str] = []
    for path in candidates:
        try:
            name = (path / "name").read_text().strip()
            if name.startswith("package") or name == "dram":
                zone = RaplZone(path, name, int((path / "max_energy_range_uj").read_text().strip()))
                zone.read_uj()  # root-only on kernels patched for PLATYPUS
                zones.append(zone)
        except PermissionError:
            problems.append(f"permission denied reading {path / 'energy_uj'} (root-only since the "
                            "PLATYPUS fix; run as root or chmod the file)")
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read the zone ({exc})")
    if zones:
        return zones, None
    return [], "; ".join(dict.fromkeys(problems)) or f"no package or dram zone under {root}"


class RaplReader:
    """µJ per zone accumulated across wrap-arounds since the reader was made."""

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.zones, self.reason = discover_zones(root)
        self._last = {z: z.read_uj() for z in self.zones}
        self._total = dict.fromkeys(self.zones, 0)

    def totals_uj(self) -> dict[RaplZone, int]:
        for zone in self.zones:
            now = zone.read_uj()
            self._total[zone] += counter_delta(self._last[zone], now, zone.max_range_uj)
            self._last[zone] = now
        return dict(self._total)


def split_domains(start: dict[RaplZone, int], end: dict[RaplZone, int]) -> dict[str, float]:
    """Joules between two :meth:`RaplReader.totals_uj` snapshots, summed into package and dram."""
    out: dict[str, float] = {}
    for zone, uj in end.items():
        domain = "dram" if zone.name == "dram" else "package"
        out[domain] = out.get(domain, 0.0) + (uj - start.get(zone, 0)) / 1e6
    return out
