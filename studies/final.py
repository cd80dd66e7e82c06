"""Final runs: every arm's best configuration on the paired seed list (STUDY_PROTOCOL Rules 2 and 4).

Each final run is a normal run directory written by ``localearn.fit`` (``checkpoint.pt`` every
epoch, ``run.json`` at the end), so an interrupted study resumes it from its checkpoint and skips
it once ``run.json`` says ``complete``. The test split is evaluated once per final run, after the
restore. Protocol ``matched_passes`` (Rule 2, Protocol B): the backprop arm runs under its own
convergence first; each local arm with S sequential units then gets ceil(E_BP / S) epochs per unit,
E_BP the backprop arm's mean epochs, with patience equal to that budget so it cannot stop early.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.arms import Arm
from localearn.studies.protocol import verdict
from localearn.studies.spec import StudySpec
from localearn.studies.summary import scale_of
from localearn.studies.trial import arm_params, arm_run

from localearn.errors import LocalearnError
from localearn.measure.energy import EnergyProbe
from localearn.run import build_learner, execute, fit
from localearn.runrecord import RunRecord


def best_config(study: optuna.Study, arm: Arm) -> dict[str, Any]:
    """The arm's best trial (in the objective's direction) as (training values, learner options),
    rebuilt through its space."""
    try:
        best = study.best_trial
    except ValueError:
        raise LocalearnError(f"arm {arm.key}: no tuning trial completed, so there is no configuration "
                             "to run (see the trials' 'failure' attributes)") from None
    train, options = arm_params(optuna.trial.FixedTrial(best.params, best.number), arm)
    return {"train": train, "learner_options": options, "trial": best.number, "best_value": best.value,
            "params": dict(best.params)}


def unit_count(spec: StudySpec, arm: Arm, config: dict[str, Any]) -> int:
    """S, the learner's number of sequential training units (``stages()``)."""
    run = arm_run(spec, arm, config["train"], config["learner_options"], 0)
    return len(build_learner(run.algorithm, run.load_data(), run.learner_options).stages())


def run_dir(study_dir: Path, arm: Arm, seed: int) -> Path:
    return study_dir / "runs" / arm.dataset / arm.name / f"seed-{seed}"


def read_run(path: Path) -> RunRecord | None:
    """A finished run's record, or None when it has not finished."""
    run = RunRecord.load(path)
    return run if run is not None and run.status in ("complete", "diverged") else None


def final_run(spec: StudySpec, arm: Arm, config: dict[str, Any], seed: int, out: Path,
              epochs: int | None = None) -> RunRecord:
    """One final run (resumed from its checkpoint, or skipped when already finished)."""
    done = read_run(out)
    if done is not None:
        return done
    probes = [EnergyProbe(country=spec.country, idle_seconds=spec.idle_seconds)] if (
        spec.energy or spec.country is not None) else []
    if (out / "checkpoint.pt").is_file():
        return RunRecord.from_dict(fit(arm.algo, arm.dataset, out=out, resume=True, data_dir=spec.data_dir,
                                       device=spec.device, progress=False, probes=probes))
    budget = {"epochs": epochs, "patience": epochs} if epochs is not None else {}
    run = arm_run(spec, arm, config["train"], config["learner_options"], seed, **budget)
    return RunRecord.from_dict(execute(run, out=out, probes=probes))


def matched_epochs(spec: StudySpec, arm: Arm, config: dict[str, Any], baseline_runs: list[RunRecord]) -> int:
    """Protocol B's per-unit budget ceil(E_BP / S) for ``arm``."""
    epochs = [r.epochs for r in baseline_runs if r.complete and r.epochs is not None]
    if not epochs:
        raise LocalearnError(f"matched_passes: {arm.baseline} has no complete run to match")
    return max(1, math.ceil(statistics.fmean(epochs) / unit_count(spec, arm, config)))


def summary_lines(spec: StudySpec, runs: dict[str, dict[int, RunRecord]]) -> list[str]:
    """The one-screen summary: each arm's mean test metric, its difference from backprop with CI
    and verdict (in the metric's direction), and the training-time ratio."""
    factor, unit = scale_of(spec.metric)
    better = "higher" if spec.direction == "maximize" else "lower"
    lines = [f"study {spec.name}: task {spec.task} (test {spec.metric}, {better} is better), precision "
             f"{spec.precision}, protocol {spec.protocol}, stop rule {spec.stop_metric} "
             f"(patience {spec.patience}, cap {spec.epochs} epochs per unit), {spec.trials} trials per arm, "
             f"seeds {spec.seeds}"]
    head = f"delta {unit or spec.metric} vs BP [95% CI]"
    lines.append(f"  {'arm':<34} {'n':>2} {'test ' + spec.metric:>12} {head:>30}  verdict       {'time x':>6}")
    for arm in spec.arms:
        ok = {s: r for s, r in runs.get(arm.key, {}).items() if r.complete and r.test is not None}
        scores = [factor * float(r.test) for r in ok.values() if r.test is not None]
        # percentages (accuracy, ROC-AUC) to 0.01 pp as the protocol reports them; other metrics to 4 digits
        num = ".2f" if unit == "pp" else ".4g"
        mean = f"{statistics.fmean(scores):{num}}{'%' if unit == 'pp' else ''}" if scores else "n/a"
        delta, label, ratio = "", "(baseline)" if arm.is_baseline else "", ""
        base = {s: r for s, r in runs.get(arm.baseline or "", {}).items() if r.complete and r.test is not None}
        paired = sorted(set(ok) & set(base))
        if arm.baseline and len(paired) >= 2:
            v = verdict([factor * float(ok[s].test or 0) for s in paired],
                        [factor * float(base[s].test or 0) for s in paired], margin=spec.margin)
            delta = f"{v.mean:+{num}} [{v.ci95[0]:+{num}}, {v.ci95[1]:+{num}}]"
            label = v.label
            t = statistics.fmean(float(ok[s].train_seconds or 0) for s in paired)
            tb = statistics.fmean(float(base[s].train_seconds or 0) for s in paired)
            ratio = f"{t / tb:.2f}" if tb > 0 else ""
        elif arm.baseline:
            label = "too few paired runs"
        failed = len(runs.get(arm.key, {})) - len(ok)
        note = f"  ({failed} failed)" if failed else ""
        lines.append(f"  {arm.key:<34} {len(scores):>2} {mean:>12} {delta:>30}  {label:<13} {ratio:>6}{note}")
    return lines
