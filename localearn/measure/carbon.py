"""CO2e estimates with CodeCarbon's offline tracker and an explicit country.

Reference: Courty, Schmidt, Luccioni et al., "CodeCarbon" (software, doi:10.5281/zenodo.4658424);
Lacoste et al., "Quantifying the Carbon Emissions of Machine Learning", arXiv:1910.09700.
STUDY_PROTOCOL.md Rule 3: a fresh offline tracker per run, an explicit country code (no code is
an error, never a world average), and the return value checked because CodeCarbon logs and
swallows its own exceptions. The figure is an *estimate*: CodeCarbon multiplies its own power
model (RAPL or a TDP table for the CPU, NVML for the GPU, a per-GB constant for RAM) by a yearly
country-average carbon intensity, so it is labelled ``codecarbon_offline (estimated)``. CodeCarbon
is imported when a tracker starts, never by ``import localearn``.
"""

from __future__ import annotations

import logging
from typing import Any

from localearn.errors import ConfigError
from localearn.measure.provenance import package_version

METHOD = "codecarbon_offline (estimated)"


class _Capture(logging.Handler):
    """Keeps CodeCarbon's warnings and errors so that a failed estimate can say why."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def energy_mix_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 code -> country name, from the data CodeCarbon ships (offline)."""
    try:
        from codecarbon.input import DataSource
    except ImportError as exc:
        raise ConfigError("CO2e needs codecarbon (pip install codecarbon)") from exc
    data = DataSource().get_global_energy_mix_data()
    return {code: str(entry.get("country_name", code)) for code, entry in data.items()}


def resolve_country(code: str | None) -> str:
    """Validate ``code`` against CodeCarbon's energy-mix table; return the alpha-3 code.

    CodeCarbon 3.x wants ISO 3166-1 alpha-3 (``POL``) and silently uses the world average for a
    code it has no data for, so the code is checked here; alpha-2 (``PL``) is converted with
    ``pycountry`` (a CodeCarbon dependency).

    Raises:
        ConfigError: no code, or a code CodeCarbon has no energy-mix data for.
    """
    if code is None or not str(code).strip():
        raise ConfigError("CO2e needs an explicit country: pass --country with an ISO 3166-1 code, "
                          "e.g. POL or PL (no default, to avoid a silent world average)")
    alpha3 = raw = str(code).strip().upper()
    countries = energy_mix_countries()
    if len(raw) == 2:
        import pycountry

        match = pycountry.countries.get(alpha_2=raw)
        if match is None:
            raise ConfigError(f"unknown ISO 3166-1 alpha-2 country code {code!r}; "
                              "use an alpha-3 code such as POL, DEU, USA, FRA")
        alpha3 = str(match.alpha_3)
    if alpha3 not in countries:
        sample = ", ".join(sorted(countries)[:8])
        raise ConfigError(f"CodeCarbon has no energy-mix data for country {code!r}; valid: the "
                          f"{len(countries)} ISO 3166-1 alpha-3 codes in its global_energy_mix.json "
                          f"({sample}, ...; e.g. POL, DEU, USA, FRA)")
    return alpha3


class CarbonTracker:
    """A fresh :class:`codecarbon.OfflineEmissionsTracker` that writes no files and stays quiet.

    Args:
        country: ISO 3166-1 alpha-3 or alpha-2 code (validated by :func:`resolve_country`).
        measure_power_secs: CodeCarbon's sampling interval.
        log_level: level for the ``codecarbon`` logger while the tracker lives.
    """

    def __init__(self, country: str | None, measure_power_secs: float = 5.0, log_level: str = "error") -> None:
        self.country = resolve_country(country)
        self.measure_power_secs, self.log_level = measure_power_secs, log_level
        self._tracker: Any = None
        self._capture = _Capture()
        self._logger = logging.getLogger("codecarbon")
        self._old_level = self._logger.level
        self._result: dict[str, Any] | None = None

    def start(self) -> None:
        """Create and start the tracker (CodeCarbon's INFO chatter is silenced first)."""
        from codecarbon import OfflineEmissionsTracker

        self._logger.setLevel(self.log_level.upper())
        self._logger.addHandler(self._capture)
        self._tracker = OfflineEmissionsTracker(  # an empty output list: no emissions.csv in the cwd
            country_iso_code=self.country, log_level=self.log_level, measure_power_secs=self.measure_power_secs,
            tracking_mode="process", allow_multiple_runs=True, project_name="localearn", output_methods=[])
        self._tracker.start()

    def stop(self) -> dict[str, Any]:
        """Stop the tracker and return the estimate, or a failure that says why."""
        if self._result is not None:
            return self._result
        tracker, self._tracker = self._tracker, None
        try:
            kg = tracker.stop() if tracker is not None else None
        finally:
            self._logger.removeHandler(self._capture)
            self._logger.setLevel(self._old_level)
        base: dict[str, Any] = {"method": METHOD, "country_iso_code": self.country,
                                "codecarbon_version": package_version("codecarbon"), "tracking_mode": "process"}
        data = getattr(tracker, "final_emissions_data", None)
        if kg is None or data is None:
            why = "; ".join(self._capture.messages[-5:]) or "CodeCarbon returned no result"
            self._result = {**base, "status": "failed", "kg_co2e": None,
                            "reason": f"CodeCarbon failed (it swallows its exceptions): {why}"}
            return self._result
        kwh = {f"{k}_kwh": float(getattr(data, k)) for k in ("cpu_energy", "gpu_energy", "ram_energy")}
        watts = {f"{k}_w": float(getattr(data, k)) for k in ("cpu_power", "gpu_power", "ram_power")}
        self._result = {
            **base, "status": "estimated", "kg_co2e": float(kg), "country_name": data.country_name,
            "energy_kwh": float(data.energy_consumed), **kwh, "duration_s": float(data.duration), **watts,
            "hardware_models": [str(h) for h in (getattr(tracker, "_conf", {}) or {}).get("hardware", [])],
            "warnings": self._capture.messages[-5:],
            "note": "CodeCarbon's own power model x yearly country-average carbon intensity; "
            "an estimate, not a measurement",
        }
        return self._result
