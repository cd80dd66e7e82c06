"""CPU package and DRAM energy from Intel RAPL through the Linux powercap interface.

Reference: Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3B, §15.10
"Platform Specific Power Management Support" (RAPL); Linux ``Documentation/power/powercap``.
STUDY_PROTOCOL.md Rule 3: CPU and DRAM energy come from RAPL where readable and are otherwise
reported as ``not_measured`` with the reason, never estimated silently.

Each zone ``<root>/intel-rapl:<i>[:<j>]`` holds ``name`` (``package-0``, ``dram``, ``core``,
``uncore``, ``psys``), ``energy_uj`` (a monotone counter in µJ that wraps to 0 after
``max_energy_range_uj``) and ``max_energy_range_uj``. Only ``package-*`` and ``dram`` zones are
summed: ``core`` and ``uncore`` are contained in the package and ``psys`` covers the whole
platform, so adding them would count energy twice. RAPL is machine-wide: the figure includes every
process on the socket, which the method label says.
"""

from __future__ import annotations

import threading
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
    """Energy between two reads of a counter that wraps to 0 after ``max_range_uj``.

    A single wrap between the reads is assumed; :class:`RaplReader` is sampled often enough
    (seconds, against a wrap period of minutes at full package power) for that to hold.
    """
    if end_uj >= start_uj:
        return end_uj - start_uj
    return end_uj + (max_range_uj - start_uj)


def discover_zones(root: str | Path = DEFAULT_ROOT) -> tuple[list[RaplZone], str | None]:
    """The readable package and DRAM zones under ``root``, or ([], reason) when there are none."""
    root = Path(root)
    if not root.is_dir():
        return (
            [],
            f"no powercap directory at {root} (kernel without intel_rapl, not Linux, or a VM)",
        )
    candidates = sorted(p for p in root.glob("intel-rapl:*") if p.is_dir())
    if not candidates:
        return [], f"no intel-rapl zones under {root} (no RAPL on this CPU, or a VM that hides it)"
    zones: list[RaplZone] = []
    problems: list[str] = []
    for path in candidates:
        try:
            name = (path / "name").read_text().strip()
        except OSError as exc:
            problems.append(f"{path / 'name'}: {exc.strerror or exc}")
            continue
        if not (name.startswith("package") or name == "dram"):
            continue
        try:
            max_range = int((path / "max_energy_range_uj").read_text().strip())
            zone = RaplZone(path, name, max_range)
            zone.read_uj()  # the counter itself is root-only on kernels patched for PLATYPUS
        except PermissionError:
            problems.append(
                f"permission denied reading {path / 'energy_uj'} (root-only since the "
                "PLATYPUS fix; run as root or chmod the file)"
            )
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read energy counter ({exc})")
            continue
        zones.append(zone)
    if zones:
        return zones, None
    if problems:
        return [], "; ".join(dict.fromkeys(problems))
    return [], f"no package or dram zone under {root}"


class RaplReader:
    """Accumulates package and DRAM energy across wrap-arounds; thread-safe.

    Call :meth:`sample` at window edges and every few seconds in between (the energy probe's
    poller does), then difference :meth:`totals_uj` snapshots.

    Args:
        root: the powercap directory (``/sys/class/powercap``; tests pass a fake tree).
    """

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self.zones, self.reason = discover_zones(self.root)
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._total: dict[str, int] = {}
        if self.zones:
            self.sample()

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def _key(self, zone: RaplZone) -> str:
        return f"{zone.path.name}:{zone.name}"

    def sample(self) -> dict[str, int]:
        """Read every zone, fold the increments into the running totals, return the totals (µJ)."""
        with self._lock:
            for zone in self.zones:
                key = self._key(zone)
                now = zone.read_uj()
                if key in self._last:
                    self._total[key] = self._total.get(key, 0) + counter_delta(
                        self._last[key], now, zone.max_range_uj
                    )
                else:
                    self._total[key] = 0
                self._last[key] = now
            return dict(self._total)

    def totals_uj(self) -> dict[str, int]:
        """Accumulated µJ per zone since the reader was created (read fresh)."""
        return self.sample()

    def domain_names(self) -> dict[str, str]:
        """Zone key -> RAPL domain name (``package-0``, ``dram``)."""
        return {self._key(z): z.name for z in self.zones}


def split_domains(delta_uj: dict[str, int], names: dict[str, str]) -> dict[str, float]:
    """Sum zone deltas (µJ) into ``package`` and ``dram`` joules."""
    out: dict[str, float] = {}
    for key, uj in delta_uj.items():
        domain = "dram" if names.get(key) == "dram" else "package"
        out[domain] = out.get(domain, 0.0) + uj / 1e6
    return out
