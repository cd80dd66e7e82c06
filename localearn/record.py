"""Run-record assembly: the ``run.json`` a :class:`~localearn.trainer.Trainer` writes.

One JSON per run (config, versions, device, units, history, metrics with the method behind each
number). Only a ``complete`` run carries test and validation scores in ``metrics``; a diverged
run names where it diverged and, if a best state from a finite epoch existed, reports that
state's scores apart under ``best_state_metrics`` (see :mod:`localearn.outcome`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from localearn.measure import device_info, peak_rss_bytes, versions

if TYPE_CHECKING:
    from localearn.trainer import Trainer

METHODS = {
    "train_seconds": "time.perf_counter over the warmup+train windows, device-synchronised edges",
    "peak_saved_activation_bytes": "autograd saved_tensors_hooks, live bytes, parameters excluded",
    "peak_rss_bytes": "getrusage ru_maxrss (process lifetime, includes data loading)",
    "cuda_peak_allocated_bytes": "torch.cuda.max_memory_allocated after warm-up reset, max over units",
    "cuda_peak_reserved_bytes": "torch.cuda.max_memory_reserved since the last unit start (includes test)",
    "data_passes": "training-set passes summed over training units",
}


def scores(task_metric: str, test: dict[str, float] | None, val: dict[str, float] | None) -> dict[str, Any]:
    """``test_<metric>``, ``test_loss``, ``val_<metric>``, ``val_loss`` (None where not measured)."""
    # Consumers read test_accuracy; a run of another task has it as None, never missing.
    out: dict[str, Any] = {"test_accuracy": None, "val_accuracy": None}
    for split, res in (("test", test), ("val", val)):
        out[f"{split}_{task_metric}"] = res[task_metric] if res else None
        out[f"{split}_loss"] = res["loss"] if res else None
    return out


def per_layer(trainer: Trainer, layer_acc: dict[str, float] | None) -> dict[str, dict[str, Any]]:
    """Parameters, saved bytes and (where the learner exposes per-layer scores) test accuracy."""
    out: dict[str, dict[str, Any]] = {}
    for layer in trainer.learner.local_layers:
        entry: dict[str, Any] = {
            "parameters": sum(p.numel() for p in layer.parameters()),
            "peak_saved_activation_bytes": (trainer.saved.per_layer.get(layer.layer_name, 0)
                                            if trainer.config.measure_memory else None),
        }
        if layer_acc and layer.layer_name in layer_acc:
            entry["test_accuracy"] = layer_acc[layer.layer_name]
        entry.update(getattr(layer, "block_info", None) or {})  # a model's block: its modules, output shape
        if getattr(layer, "kernel_used", None):  # torch | triton | compile (localearn.kernels)
            entry["kernel"] = layer.kernel_used
        out[layer.layer_name] = entry
    return out


def run_record(trainer: Trainer, status: str, test: dict[str, float] | None = None,
               val: dict[str, float] | None = None, layer_acc: dict[str, float] | None = None) -> dict[str, Any]:
    """The run record of ``trainer`` now, with ``status`` and the final scores (complete runs)."""
    st, cfg, meter, device = trainer.state, trainer.config, trainer.meter, trainer.device
    train_s = meter.total("warmup", "train")
    cuda = device.type == "cuda"
    peaks = trainer.cuda_peaks
    metrics = {
        **scores(trainer.task.metric, test, val),
        "train_seconds": train_s,
        "warmup_seconds": meter.seconds.get("warmup", 0.0),
        "validate_seconds": meter.seconds.get("validate", 0.0),
        "checkpoint_seconds": meter.seconds.get("checkpoint", 0.0),
        "test_seconds": meter.seconds.get("test", 0.0),
        "samples_per_second": st.samples / train_s if train_s > 0 else None,
        "steps": st.steps,
        "data_passes": sum(u["data_passes"] for u in st.units) + st.epoch_in_stage,
        "epochs": st.global_epoch,
        "peak_saved_activation_bytes": trainer.saved.peak_bytes if trainer.config.measure_memory else None,
        "peak_rss_bytes": max(peak_rss_bytes(), trainer.resumed_rss),
        # Training peak: the highest unit peak (the live counter was reset at each unit start
        # and now also holds the test pass); the live counter only before any unit finished.
        "cuda_peak_allocated_bytes": (max(peaks.values()) if peaks
                                      else int(torch.cuda.max_memory_allocated(device))) if cuda else None,
        "cuda_peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)) if cuda else None,
        "cuda_peak_allocated_per_unit": peaks if cuda else None,
        "per_layer": per_layer(trainer, layer_acc),
        "energy": {"method": "not_measured",
                   "reason": "not requested (localearn train --energy, or probes=[EnergyProbe()])"},
    }
    for probe in meter.probes:
        metrics.update(probe.report())
    record: dict[str, Any] = {
        "status": status,
        **trainer.run_info,
        "task": trainer.task.name,
        "arch": str(trainer.learner.arch),
        "schedule": trainer.learner.schedule_mode,
        "seed": cfg.seed,
        "config": {**asdict(cfg), "optimizer_resolved": trainer.optim_settings,
                   "stop_metric_resolved": trainer.stop_metric},
        # The update policy as resolved (TrainConfig over the learner's declaration): precision,
        # clipping (and the coupling a network-wide clip declares), warm-ups, schedule.
        "update": trainer.policy.record(),
        "stop_rule": {"metric": trainer.stop_metric, "patience": cfg.patience, "min_delta": cfg.min_delta,
                      "cap_epochs_per_unit": cfg.epochs, "restore_best": cfg.restore_best},
        "versions": versions(),
        "device": device_info(device),
        "data": trainer.data.info,
        "units": st.units,
        "history": st.history,
        "phases_seconds": dict(meter.seconds),
        "metrics": metrics,
        "methods": METHODS,
    }
    if st.diverged is not None:
        record["diverged"] = st.diverged
        record["best_state_metrics"] = st.best_state_metrics
    return record
