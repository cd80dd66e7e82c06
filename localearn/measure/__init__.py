"""Measurement: metered phases, saved-for-backward memory, peak RSS, provenance.

Every number carries the method that produced it (DESIGN.md, Measurement).
"""

from localearn.measure.memory import SavedTensorMeter, active_meter, layer_scope, peak_rss_bytes
from localearn.measure.phases import PhaseMeter, Probe, synchronize
from localearn.measure.provenance import device_info, versions, write_result

__all__ = [
    "PhaseMeter",
    "Probe",
    "SavedTensorMeter",
    "active_meter",
    "device_info",
    "layer_scope",
    "peak_rss_bytes",
    "synchronize",
    "versions",
    "write_result",
]
