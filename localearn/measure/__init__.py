"""Measurement: metered phases, saved-for-backward memory, peak RSS, energy, provenance.

Every number carries the method that produced it (docs/guides/measurement.md). Importing this
package loads neither NVML nor CodeCarbon: they are imported when a probe starts.
"""

from localearn.measure.capabilities import environment_report, format_environment
from localearn.measure.energy import EnergyProbe
from localearn.measure.energy_report import format_energy
from localearn.measure.memory import SavedTensorMeter, layer_scope, peak_rss_bytes
from localearn.measure.phases import PhaseMeter, Probe, synchronize
from localearn.measure.provenance import device_info, package_version, versions, write_result

__all__ = ["EnergyProbe", "PhaseMeter", "Probe", "SavedTensorMeter", "device_info", "environment_report",
           "format_energy", "format_environment", "layer_scope", "package_version", "peak_rss_bytes",
           "synchronize", "versions", "write_result"]
