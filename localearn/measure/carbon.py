"""CO2e estimates with CodeCarbon's offline tracker and an explicit country.

References: Courty, Schmidt, Luccioni et al., "CodeCarbon" (doi:10.5281/zenodo.4658424); Lacoste
et al., "Quantifying the Carbon Emissions of Machine Learning", arXiv:1910.09700. docs/concepts/protocol.md#rule-3: a
fresh offline tracker per run, an explicit country (never a world average), and the
result checked, because CodeCarbon logs and swallows its own exceptions. The figure is CodeCarbon's
power model × a yearly country-average intensity, hence ``codecarbon_offline (estimated)``.
"""

from __future__ import annotations

import logging
import logging.handlers
from typing import Any

from localearn.errors import ConfigError
from localearn.measure.provenance import package_version

METHOD = "codecarbon_offline (estimated)"


def energy_mix_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 code -> country name, from the data CodeCarbon ships (offline)."""
    try:
        from codecarbon.input import DataSource
    except ImportError as exc:
        raise ConfigError("CO2e needs codecarbon (pip install codecarbon)") from exc
    data = DataSource().get_global_energy_mix_data()
    return {code: str(entry.get("country_name", code)) for code, entry in data.items()}


def resolve_country(code: str | None) -> str:
    """The alpha-3 code for ``code`` (alpha-3, or alpha-2 via ``pycountry``), checked against
    CodeCarbon's energy-mix table, which would otherwise silently fall back to the world average.

    Raises:
        ConfigError: no code, or a code CodeCarbon has no energy-mix data for.
    """
    if code is None or not str(code).strip():
        raise ConfigError("CO2e needs an explicit country: pass --country with an ISO 3166-1 code, "
                          "e.g. POL or PL (no default, to avoid a silent world average)")
    alpha3 = raw = str(code).strip().upper()
    countries = energy_mix_countries()
    if len(raw) == 2:
        import pycountry  # a CodeCarbon dependency

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
    """A fresh quiet :class:`codecarbon.OfflineEmissionsTracker` that writes no files.

    Args:
        country: ISO 3166-1 alpha-3 or alpha-2 code (validated now, before any training).
        measure_power_secs: CodeCarbon's sampling interval.
    """

    def __init__(self, country: str | None, measure_power_secs: float = 5.0) -> None:
        self.country = resolve_country(country)
        self.measure_power_secs = measure_power_secs
        self._tracker: Any = None
        self._capture = logging.handlers.BufferingHandler(10_000)  # CodeCarbon's warnings: why it failed
        self._capture.setLevel(logging.WARNING)
        self._logger = logging.getLogger("codecarbon")
        self._old_level = self._logger.level
        self._result: dict[str, Any] | None = None

    def start(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        self._logger.setLevel("ERROR")  # silence CodeCarbon's INFO chatter
        self._logger.addHandler(self._capture)
        self._tracker = OfflineEmissionsTracker(  # no output methods: no emissions.csv in the cwd
            country_iso_code=self.country, log_level="error", measure_power_secs=self.measure_power_secs,
            tracking_mode="process", allow_multiple_runs=True, project_name="localearn", output_methods=[])
        self._tracker.start()

    def stop(self) -> dict[str, Any]:
        """Stop the tracker; the estimate, or ``status: failed`` with CodeCarbon's messages."""
        if self._result is not None:
            return self._result
        tracker, self._tracker = self._tracker, None
        try:
            kg = tracker.stop() if tracker is not None else None
        finally:
            self._logger.removeHandler(self._capture)
            self._logger.setLevel(self._old_level)
        messages = [f"{r.levelname}: {r.getMessage()}" for r in self._capture.buffer][-5:]
        base: dict[str, Any] = {"method": METHOD, "country_iso_code": self.country,
                                "codecarbon_version": package_version("codecarbon"), "tracking_mode": "process"}
        data = getattr(tracker, "final_emissions_data", None)
        if kg is None or data is None:
            why = "; ".join(messages) or "CodeCarbon returned no result"
            self._result = {**base, "status": "failed", "kg_co2e": None,
                            "reason": f"CodeCarbon failed (it swallows its exceptions): {why}"}
            return self._result
        self._result = {
            **base, "status": "estimated", "kg_co2e": float(kg), "country_name": data.country_name,
            "energy_kwh": float(data.energy_consumed),
            **{f"{k}_kwh": float(getattr(data, k)) for k in ("cpu_energy", "gpu_energy", "ram_energy")},
            "duration_s": float(data.duration),
            **{f"{k}_w": float(getattr(data, k)) for k in ("cpu_power", "gpu_power", "ram_power")},
            "hardware_models": [str(h) for h in (getattr(tracker, "_conf", {}) or {}).get("hardware", [])],
            "warnings": messages,
            "note": "CodeCarbon's own power model x yearly country-average carbon intensity; "
            "an estimate, not a measurement",
        }
        return self._result
