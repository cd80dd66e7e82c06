"""The run record as a typed object: what ``run.json`` (:mod:`localearn.record`) holds, read back.

docs/concepts/protocol.md#rule-4 (provenance with every run): a study's report, its rows and plots, the
study runner's final-run check and the CLI's summary all read run records; they read them here,
through :class:`RunRecord`, instead of each indexing the JSON by string keys. The loader tolerates
older files: a record without ``task`` is a classification run, one without ``update`` trained at
fp32, a history row may name its metric ``val_accuracy`` (before other tasks existed) or
``val_<metric>``, and a field that is missing reads as None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localearn.errors import LocalearnError
from localearn.tasks import TASKS

#: energy methods that are no measurement (localearn.measure.energy)
UNMEASURED = ("not_measured", "cannot_attribute", "not_requested")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _table(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Energy:
    """Training energy and its method label; joules only where the method measured them."""

    method: str = "not_measured"
    train_joules: float | None = None
    train_adjusted_joules: float | None = None
    co2e_kg: float | None = None
    co2e_method: str = "not_requested"

    @classmethod
    def from_dict(cls, energy: Any) -> Energy:
        energy = energy if isinstance(energy, dict) else {}
        method = str(energy.get("method", "not_measured"))
        measured = method not in UNMEASURED
        co2e = energy.get("co2e") if isinstance(energy.get("co2e"), dict) else {}
        co2e_method = str(co2e.get("method", "not_requested"))
        if co2e.get("status") not in (None, "estimated"):
            co2e_method = f"{co2e_method} ({co2e.get('status')})"
        return cls(method, _num(energy.get("train_joules")) if measured else None,
                   _num(energy.get("train_adjusted_joules")) if measured else None, _num(co2e.get("kg_co2e")),
                   co2e_method)


@dataclass(frozen=True)
class Epoch:
    """One row of ``history``: a validated epoch of one training unit."""

    unit: str
    epoch: int | None
    global_epoch: int | None
    train_loss: float | None
    val_loss: float | None
    val_metric: float | None  # the task's metric (accuracy, roc_auc, mse)


@dataclass(frozen=True)
class Layer:
    """One local layer's entry of ``metrics.per_layer``."""

    parameters: int | None
    peak_saved_activation_bytes: int | None
    test_accuracy: float | None


@dataclass(frozen=True)
class RunRecord:
    """A finished (or failed) run: its identity, settings, scores on the task's metric and costs."""

    status: str
    algorithm: str | None = None
    dataset: str | None = None
    task: str = "classification"
    arch: str | None = None
    schedule: str | None = None
    seed: int | None = None
    precision: str = "fp32"
    stop_metric: str | None = None
    test: float | None = None  # the task's metric on the test split
    val: float | None = None
    test_loss: float | None = None
    val_loss: float | None = None
    epochs: int | None = None
    data_passes: int | None = None
    train_seconds: float | None = None
    validate_seconds: float | None = None
    samples_per_second: float | None = None
    peak_saved_activation_bytes: int | None = None
    peak_rss_bytes: int | None = None
    cuda_peak_allocated_bytes: int | None = None
    energy: Energy = field(default_factory=Energy)
    per_layer: dict[str, Layer] = field(default_factory=dict)
    units: tuple[dict[str, Any], ...] = ()
    history: tuple[Epoch, ...] = ()
    diverged: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None  # per-rank time, bytes and waits of a --parallel run

    @property
    def metric(self) -> str:
        """``accuracy``, ``roc_auc`` or ``mse`` (:data:`localearn.tasks.TASKS`)."""
        return TASKS[self.task].metric if self.task in TASKS else "accuracy"

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def failure(self) -> str:
        """Why this run gives no result ("" for a complete, scored run)."""
        if self.status == "diverged":
            d = self.diverged or {}
            where = ", ".join(f"{k} {d[k]}" for k in ("unit", "layer", "epoch") if d.get(k) is not None)
            reason = str(d.get("reason", "no reason recorded" if where else "diverged"))
            return f"{where}: {reason}" if where else reason
        if self.status != "complete":
            return f"status {self.status!r}"
        if self.test is None:
            return f"complete but no test {self.metric} recorded"
        return ""

    @classmethod
    def from_dict(cls, run: dict[str, Any]) -> RunRecord:
        """A record from ``run.json``'s content (or what :func:`localearn.fit` returns)."""
        m, update, layers = _table(run, "metrics"), _table(run, "update"), _table(_table(run, "metrics"), "per_layer")
        task = str(run["task"]) if run.get("task") in TASKS else "classification"
        metric = TASKS[task].metric
        history = [h for h in run.get("history") or [] if isinstance(h, dict)]
        return cls(
            status=str(run.get("status", "missing")), algorithm=run.get("algorithm"), dataset=run.get("dataset"),
            task=task, arch=run.get("arch"), schedule=run.get("schedule"), seed=_int(run.get("seed")),
            precision=str(update.get("precision", "fp32")),
            stop_metric=_table(run, "stop_rule").get("metric"),
            test=_num(m.get(f"test_{metric}")), val=_num(m.get(f"val_{metric}")), test_loss=_num(m.get("test_loss")),
            val_loss=_num(m.get("val_loss")), epochs=_int(m.get("epochs")), data_passes=_int(m.get("data_passes")),
            train_seconds=_num(m.get("train_seconds")), validate_seconds=_num(m.get("validate_seconds")),
            samples_per_second=_num(m.get("samples_per_second")),
            peak_saved_activation_bytes=_int(m.get("peak_saved_activation_bytes")),
            peak_rss_bytes=_int(m.get("peak_rss_bytes")),
            cuda_peak_allocated_bytes=_int(m.get("cuda_peak_allocated_bytes")),
            energy=Energy.from_dict(m.get("energy")),
            per_layer={str(k): Layer(_int(v.get("parameters")), _int(v.get("peak_saved_activation_bytes")),
                                     _num(v.get("test_accuracy"))) for k, v in layers.items() if isinstance(v, dict)},
            units=tuple(u for u in run.get("units") or [] if isinstance(u, dict)),
            history=tuple(Epoch(str(h.get("unit", "")), _int(h.get("epoch")), _int(h.get("global_epoch")),
                                _num(h.get("train_loss")), _num(h.get("val_loss")),
                                _num(h.get(f"val_{metric}", h.get("val_accuracy")))) for h in history),
            diverged=run.get("diverged") if isinstance(run.get("diverged"), dict) else None,
            distributed=run.get("distributed") if isinstance(run.get("distributed"), dict) else None,
        )

    @classmethod
    def load(cls, path: str | Path) -> RunRecord | None:
        """The record in ``path`` (a ``run.json`` or its run directory); None when there is none yet.
        A file that is not a JSON object is a record with status ``unreadable run.json``."""
        path = Path(path)
        path = path / "run.json" if path.is_dir() else path
        try:
            run = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return cls(status="unreadable run.json")
        if not isinstance(run, dict):
            return cls(status="unreadable run.json")
        return cls.from_dict(run)


def read_record(path: str | Path) -> RunRecord:
    """The record in ``path``; a clear error when there is none or it cannot be read."""
    record = RunRecord.load(path)
    if record is None or record.status == "unreadable run.json":
        raise LocalearnError(f"{path}: no readable run.json")
    return record
