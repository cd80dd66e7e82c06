"""Read a study directory: ``study.json`` and every final run's ``run.json``, one row per arm x seed.

The layout is the study runner's (see ``localearn study run``): ``DIR/study.json`` describes the
arms, ``DIR/runs/<dataset>/<arm>/seed-<s>/run.json`` holds each final run. A run whose status is
not ``complete`` (diverged, interrupted) or whose ``run.json`` is missing is a *failed* row: it is
listed with its reason and never averaged in (docs/concepts/protocol.md#rule-4).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localearn.errors import LocalearnError
from localearn.runrecord import RunRecord

STUDY_FILE = "study.json"
#: results.csv columns, in order; ``test_<metric>`` and ``val_<metric>`` name the study's metric
COLUMNS = (
    "dataset", "arm", "algo", "arch", "seed", "status", "precision", "test", "val", "epochs",
    "data_passes", "train_seconds", "seconds_per_pass", "peak_saved_activation_bytes", "peak_rss_bytes",
    "cuda_peak_allocated_bytes", "energy_train_joules", "energy_train_adjusted_joules", "energy_method",
    "co2e_kg", "co2e_method", "stop_metric", "failure",
)


def load_study(study_dir: str | Path) -> dict[str, Any]:
    """``DIR/study.json`` as a dict; a clear error when the folder is not a study directory."""
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise LocalearnError(f"{study_dir} is not a study directory: {path} does not exist")
    try:
        study = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LocalearnError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(study.get("arms"), dict) or not study["arms"]:
        raise LocalearnError(f"{path} lists no arms")
    return study


def study_objective(study: dict[str, Any]) -> dict[str, Any]:
    """The study's task, metric, direction and precision (a study.json from before: accuracy, fp32)."""
    return {"task": "classification", "metric": "accuracy", "direction": "maximize", "precision": "fp32",
            **(study.get("objective") or {})}


def run_dir(study_dir: str | Path, key: str, seed: int) -> Path:
    """Where the final run of arm ``key`` ("<dataset>/<arm>") with ``seed`` lives."""
    return Path(study_dir) / "runs" / key / f"seed-{seed}"


@dataclass(frozen=True)
class Row:
    """One arm x seed of a study: its final run's record (None when missing) and why it gives no
    result ("" when it does)."""

    key: str
    dataset: str
    arm: str
    algo: str | None
    arch: str | None
    seed: int
    run: RunRecord | None
    failure: str

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def status(self) -> str:
        return "complete" if self.ok else (self.run.status if self.run is not None else "missing")

    def value(self, column: str) -> Any:
        """A number or label of the run by its results.csv column (None where the run has none)."""
        r = self.run
        if r is None:
            return "not_measured" if column == "energy_method" else None
        if column == "seconds_per_pass":
            return r.train_seconds / r.data_passes if r.train_seconds is not None and r.data_passes else None
        if column.startswith("energy_") or column.startswith("co2e_"):
            name = {"energy_train_joules": "train_joules", "energy_train_adjusted_joules": "train_adjusted_joules",
                    "energy_method": "method"}.get(column, column)
            return getattr(r.energy, name)
        return getattr(r, column)


def make_row(key: str, arm: dict[str, Any], seed: int, run: RunRecord | None, path: Path) -> Row:
    """One results row of arm ``key`` (its study.json entry ``arm``) and ``seed``."""
    failure = f"no run.json in {path}" if run is None else run.failure()
    return Row(key, arm.get("dataset", key.split("/")[0]), arm.get("arm", key.split("/", 1)[-1]),
               arm.get("algo", run.algorithm if run else None), (run.arch if run else None) or arm.get("arch"),
               seed, run, failure)


def _seeds(study_dir: Path, key: str, listed: list[int]) -> list[int]:
    """The study's seed list, plus any other ``seed-<s>`` folder found (so nothing is hidden)."""
    seeds = list(listed)
    base = study_dir / "runs" / key
    if base.is_dir():
        for d in sorted(base.glob("seed-*")):
            try:
                s = int(d.name.split("-", 1)[1])
            except ValueError:
                continue
            if s not in seeds:
                seeds.append(s)
    return seeds


def collect_rows(study_dir: str | Path, study: dict[str, Any]) -> list[Row]:
    """Every arm x seed row of the study, in the study's arm order then seed order."""
    study_dir = Path(study_dir)
    rows = []
    for key, arm in study["arms"].items():
        for seed in _seeds(study_dir, key, [int(s) for s in study.get("seeds", [])]):
            path = run_dir(study_dir, key, seed) / "run.json"
            rows.append(make_row(key, arm, seed, RunRecord.load(path), path))
    return rows


def write_csv(rows: list[Row], path: str | Path, metric: str = "accuracy") -> Path:
    """``results.csv``: one line per arm x seed, failed runs included with their reason; the
    scores are named ``test_<metric>`` and ``val_<metric>``."""
    path = Path(path)
    names = [f"{c}_{metric}" if c in ("test", "val") else c for c in COLUMNS]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in rows:
            fixed = {"dataset": row.dataset, "arm": row.arm, "algo": row.algo, "arch": row.arch, "seed": row.seed,
                     "status": row.status, "failure": row.failure}
            cells = [fixed[c] if c in fixed else row.value(c) for c in COLUMNS]
            writer.writerow(["" if v is None else v for v in cells])
    return path
