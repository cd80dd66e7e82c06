"""Read a study directory: ``study.json`` and every final run's ``run.json``, one row per arm x seed.

The layout is the study runner's (see ``localearn study run``): ``DIR/study.json`` describes the
arms, ``DIR/runs/<dataset>/<arm>/seed-<s>/run.json`` holds each final run. A run whose status is
not ``complete`` (diverged, interrupted) or whose ``run.json`` is missing is a *failed* row: it is
listed with its reason and never averaged in (STUDY_PROTOCOL.md Rule 4).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from localearn.errors import LocalearnError

STUDY_FILE = "study.json"
# results.csv columns, in order; "run" (the whole run.json) stays in memory for the plots.
COLUMNS = (
    "dataset", "arm", "algo", "arch", "seed", "status", "test_accuracy", "val_accuracy", "epochs",
    "data_passes", "train_seconds", "seconds_per_pass", "peak_saved_activation_bytes", "peak_rss_bytes",
    "cuda_peak_allocated_bytes", "energy_train_joules", "energy_train_adjusted_joules", "energy_method",
    "co2e_kg", "co2e_method", "stop_metric", "failure",
)
UNMEASURED = ("not_measured", "cannot_attribute", "not_requested")


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


def run_dir(study_dir: str | Path, key: str, seed: int) -> Path:
    """Where the final run of arm ``key`` ("<dataset>/<arm>") with ``seed`` lives."""
    return Path(study_dir) / "runs" / key / f"seed-{seed}"


def _energy(metrics: dict[str, Any]) -> tuple[float | None, float | None, str, float | None, str]:
    energy = metrics.get("energy") or {}
    method = str(energy.get("method", "not_measured"))
    measured = method not in UNMEASURED
    joules = energy.get("train_joules") if measured else None
    adjusted = energy.get("train_adjusted_joules") if measured else None
    co2e = energy.get("co2e") or {}
    co2e_method = str(co2e.get("method", "not_requested"))
    if co2e.get("status") not in (None, "estimated"):
        co2e_method = f"{co2e_method} ({co2e.get('status')})"
    return joules, adjusted, method, co2e.get("kg_co2e"), co2e_method


def _failure(run: dict[str, Any] | None, path: Path) -> str:
    if run is None:
        return f"no run.json in {path}"
    status = run.get("status")
    if status == "diverged":
        d = run.get("diverged") or {}
        where = ", ".join(f"{k} {d[k]}" for k in ("unit", "layer", "epoch") if d.get(k) is not None)
        return f"{where}: {d.get('reason', 'no reason recorded')}" if where else str(d.get("reason", "diverged"))
    if status != "complete":
        return f"status {status!r}"
    if (run.get("metrics") or {}).get("test_accuracy") is None:
        return "complete but no test accuracy recorded"
    return ""


def make_row(key: str, arm: dict[str, Any], seed: int, run: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """One results row (``COLUMNS`` plus ``run``, the run record or None)."""
    failure = _failure(run, path)
    m = (run or {}).get("metrics") or {}
    joules, adjusted, method, co2e, co2e_method = _energy(m)
    passes, seconds = m.get("data_passes"), m.get("train_seconds")
    return {
        "key": key, "dataset": arm.get("dataset", key.split("/")[0]), "arm": arm.get("arm", key.split("/", 1)[-1]),
        "algo": arm.get("algo", (run or {}).get("algorithm")), "arch": (run or {}).get("arch", arm.get("arch")),
        "seed": seed, "status": "complete" if not failure else (run or {}).get("status", "missing"),
        "test_accuracy": m.get("test_accuracy"), "val_accuracy": m.get("val_accuracy"),
        "epochs": m.get("epochs"), "data_passes": passes, "train_seconds": seconds,
        "seconds_per_pass": seconds / passes if seconds is not None and passes else None,
        "peak_saved_activation_bytes": m.get("peak_saved_activation_bytes"),
        "peak_rss_bytes": m.get("peak_rss_bytes"), "cuda_peak_allocated_bytes": m.get("cuda_peak_allocated_bytes"),
        "energy_train_joules": joules, "energy_train_adjusted_joules": adjusted, "energy_method": method,
        "co2e_kg": co2e, "co2e_method": co2e_method,
        "stop_metric": ((run or {}).get("stop_rule") or {}).get("metric"),
        "failure": failure, "run": run,
    }


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


def collect_rows(study_dir: str | Path, study: dict[str, Any]) -> list[dict[str, Any]]:
    """Every arm x seed row of the study, in the study's arm order then seed order."""
    study_dir = Path(study_dir)
    rows = []
    for key, arm in study["arms"].items():
        for seed in _seeds(study_dir, key, [int(s) for s in study.get("seeds", [])]):
            path = run_dir(study_dir, key, seed) / "run.json"
            run = None
            if path.is_file():
                try:
                    run = json.loads(path.read_text())
                except json.JSONDecodeError:
                    run = {"status": "unreadable run.json"}
            rows.append(make_row(key, arm, seed, run, path))
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """``results.csv``: one line per arm x seed, failed runs included with their reason."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
    return path
