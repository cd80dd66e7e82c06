"""CPU package and DRAM energy from Intel RAPL through the Linux powercap interface.

Reference: Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3B, §15.10
(RAPL); Linux ``Documentation/power/powercap``. STUDY_PROTOCOL.md Rule 3: CPU and DRAM energy
come from RAPL where readable and are otherwise ``not_measured`` with the reason.

Each zone ``<root>/intel-rapl:<i>[:<j>]`` holds ``name``, ``energy_uj`` (a counter in µJ that
wraps to 0 after ``max_energy_range_uj``) and ``max_energy_range_uj``. Only ``package-*`` and
``dram`` zones are summed: ``core``/``uncore`` are inside the package and ``psys`` covers the
platform, so adding them would count energy twice. RAPL is machine-wide (every process on the
socket). The reader is sampled at window edges, so one wrap per window is handled; a window longer
than the wrap period (``max_energy_range_uj`` / package power, about 20 min at 200 W) undercounts.
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
    """The readable package and DRAM zones under ``root``, or ([], reason) when there are none."""
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
            if not (name.startswith("package") or name == "dram"):
                continue
            zone = RaplZone(path, name, int((path / "max_energy_range_uj").read_text().strip()))
            zone.read_uj()  # the counter itself is root-only on kernels patched for PLATYPUS
        except PermissionError:
            problems.append(f"permission denied reading {path / 'energy_uj'} (root-only since the "
                            "PLATYPUS fix; run as root or chmod the file)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read the zone ({exc})")
            continue
        zones.append(zone)
    if zones:
        return zones, None
    return [], "; ".join(dict.fromkeys(problems)) or f"no package or dram zone under {root}"


class RaplReader:
    """Accumulates package and DRAM energy across wrap-arounds; difference :meth:`totals_uj`.

    Args:
        root: the powercap directory (``/sys/class/powercap``; tests pass a fake tree).
    """

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.zones, self.reason = discover_zones(root)
        self._last: dict[RaplZone, int] = {z: z.read_uj() for z in self.zones}
        self._total: dict[RaplZone, int] = dict.fromkeys(self.zones, 0)

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def totals_uj(self) -> dict[RaplZone, int]:
        """Read every zone and return the µJ accumulated per zone since the reader was made."""
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
