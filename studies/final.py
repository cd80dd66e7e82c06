"""Final runs: every arm's best configuration on the paired seed list (STUDY_PROTOCOL Rules 2 and 4).

Each final run is a normal run directory written by ``localearn.fit`` (``checkpoint.pt`` every
epoch, ``run.json`` at the end), so an interrupted study resumes it from its checkpoint and skips
it once ``run.json`` says ``complete``. The test split is evaluated once per final run, after the
restore. Protocol ``matched_passes`` (Rule 2, Protocol B): the backprop arm runs under its own
convergence first; each local arm with S sequential units then gets ceil(E_BP / S) epochs per unit,
E_BP the backprop arm's mean epochs, with patience equal to that budget so it cannot stop early.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.protocol import verdict
from localearn.studies.spec import Arm, StudySpec
from localearn.studies.trial import arm_params, train_config

from localearn.data import load_dataset
from localearn.errors import LocalearnError
from localearn.run import build_learner, fit


def best_config(study: optuna.Study, arm: Arm) -> dict[str, Any]:
    """The arm's best trial as (training values, learner options), rebuilt through its space."""
    try:
        best = study.best_trial
    except ValueError:
        raise LocalearnError(f"arm {arm.key}: no tuning trial completed, so there is no configuration "
                             "to run (see the trials' 'failure' attributes)") from None
    train, options = arm_params(optuna.trial.FixedTrial(best.params, best.number), arm)
    return {"train": train, "learner_options": options, "trial": best.number, "val_accuracy": best.value,
            "params": dict(best.params)}


def unit_count(spec: StudySpec, arm: Arm, options: dict[str, Any]) -> int:
    """S, the learner's number of sequential training units (``stages()``)."""
    data = load_dataset(arm.dataset, spec.data_dir, **spec.dataset_options)
    return len(build_learner(arm.algo, data, {**arm.learner_options(), **options}).stages())


def run_dir(study_dir: Path, arm: Arm, seed: int) -> Path:
    return study_dir / "runs" / arm.dataset / arm.name / f"seed-{seed}"


def read_run(path: Path) -> dict[str, Any] | None:
    """A finished run's record, or None when it has not finished."""
    try:
        run = json.loads((path / "run.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return run if run.get("status") in ("complete", "diverged") else None


def final_run(spec: StudySpec, arm: Arm, config: dict[str, Any], seed: int, out: Path,
              epochs: int | None = None) -> dict[str, Any]:
    """One final run (resumed from its checkpoint, or skipped when already finished)."""
    done = read_run(out)
    if done is not None:
        return done
    probes: list[Any] = []
    if spec.energy or spec.country is not None:
        from localearn.measure.energy import EnergyProbe

        probes.append(EnergyProbe(country=spec.country, idle_seconds=spec.idle_seconds))
    budget = {"epochs": epochs, "patience": epochs} if epochs is not None else {}
    kwargs = train_config(spec, seed, **config["train"], **budget)
    if (out / "checkpoint.pt").is_file():
        return fit(arm.algo, arm.dataset, out=out, resume=True, data_dir=spec.data_dir, device=spec.device,
                   progress=False, probes=probes)
    return fit(arm.algo, arm.dataset, learner_options={**arm.learner_options(), **config["learner_options"]},
               data_dir=spec.data_dir, dataset_options=spec.dataset_options, out=out, probes=probes, **kwargs)


def matched_epochs(spec: StudySpec, arm: Arm, config: dict[str, Any], baseline_runs: list[dict[str, Any]]) -> int:
    """Protocol B's per-unit budget ceil(E_BP / S) for ``arm``."""
    epochs = [r["metrics"]["epochs"] for r in baseline_runs if r.get("status") == "complete"]
    if not epochs:
        raise LocalearnError(f"matched_passes: {arm.baseline} has no complete run to match")
    return max(1, math.ceil(statistics.fmean(epochs) / unit_count(spec, arm, config["learner_options"])))


def summary_lines(spec: StudySpec, runs: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The one-screen summary: mean test accuracy per arm, delta vs backprop with CI and verdict."""
    lines = [f"study {spec.name}: protocol {spec.protocol}, stop rule {spec.stop_metric} "
             f"(patience {spec.patience}, cap {spec.epochs} epochs per unit), {spec.trials} trials per arm, "
             f"seeds {spec.seeds}"]
    lines.append(f"  {'arm':<34} {'n':>2} {'test acc':>9} {'delta pp vs BP [95% CI]':>28}  verdict"
                 f"       {'time x':>6}")
    for arm in spec.arms:
        ok = {s: r for s, r in runs.get(arm.key, {}).items() if r.get("status") == "complete"}
        accs = [r["metrics"]["test_accuracy"] for r in ok.values()]
        mean = f"{100 * statistics.fmean(accs):8.2f}%" if accs else "      n/a"
        delta, label, ratio = "", "(baseline)" if arm.is_baseline else "", ""
        base = {s: r for s, r in runs.get(arm.baseline or "", {}).items() if r.get("status") == "complete"}
        paired = sorted(set(ok) & set(base))
        if arm.baseline and len(paired) >= 2:
            v = verdict([100 * ok[s]["metrics"]["test_accuracy"] for s in paired],
                        [100 * base[s]["metrics"]["test_accuracy"] for s in paired])
            delta = f"{v.mean:+.2f} [{v.ci95[0]:+.2f}, {v.ci95[1]:+.2f}]"
            label = v.label
            t = statistics.fmean(ok[s]["metrics"]["train_seconds"] for s in paired)
            tb = statistics.fmean(base[s]["metrics"]["train_seconds"] for s in paired)
            ratio = f"{t / tb:.2f}" if tb > 0 else ""
        elif arm.baseline:
            label = "too few paired runs"
        failed = len(runs.get(arm.key, {})) - len(ok)
        note = f"  ({failed} failed)" if failed else ""
        lines.append(f"  {arm.key:<34} {len(accs):>2} {mean:>9} {delta:>28}  {label:<13} {ratio:>6}{note}")
    return lines
