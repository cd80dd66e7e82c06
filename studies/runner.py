"""``run_study``: tune every arm with one budget and rule, then run the best configurations on
paired seeds (docs/concepts/protocol.md; Spyra & Dzwinel, arXiv 2511.01061, revised).

The study directory DIR holds ``spec.toml``, ``study.json`` (rewritten atomically as the study
advances), ``journal.log`` (the default Optuna storage) and ``runs/<dataset>/<arm>/seed-<s>/``.
Re-running an interrupted study resumes it: finished trials and final runs are never repeated.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.final import best_config, final_run, matched_epochs, run_dir, summary_lines
from localearn.studies.protocol import check_no_collisions
from localearn.studies.report import write_report
from localearn.studies.spec import StudySpec, load_spec
from localearn.studies.storage import (
    check_url,
    describe,
    ensure_study,
    is_rdb,
    open_storage,
    repair_orphans,
    requeue_lost,
    slot_counts,
)
from localearn.studies.trial import make_pruner, sampler_record
from localearn.studies.worker import Worker, optuna_name, start_workers
from tqdm.auto import tqdm

import localearn
from localearn.checkpoint import write_json
from localearn.errors import ConfigError, LocalearnError
from localearn.runrecord import RunRecord


def objective(spec: StudySpec) -> dict[str, Any]:
    """What every arm's trials optimise, which a started study keeps: the task's metric on the
    validation split, its direction, and the one precision of every arm."""
    return {"task": spec.task, "metric": spec.metric, "direction": spec.direction, "precision": spec.precision}


def _stop_rule(spec: StudySpec) -> dict[str, Any]:
    return {"metric": spec.stop_metric, "patience": spec.patience, "cap_epochs_per_unit": spec.epochs,
            "restore_best": spec.restore_best, "min_delta": 0.0}


class _Record:
    """study.json: written atomically whenever the study advances."""

    def __init__(self, spec: StudySpec, study_dir: Path, storage: str) -> None:
        self.path = study_dir / "study.json"
        self.data: dict[str, Any] = {
            "name": spec.name, "spec": spec.to_dict(), "storage": storage, "protocol": spec.protocol,
            "stop_rule": _stop_rule(spec),
            "pruner": {"policy": spec.pruner, "class": type(make_pruner(spec.pruner)).__name__,
                       "axis": f"whole-model validation {spec.metric} per data pass"},
            "optuna_version": optuna.__version__, "localearn_version": localearn.__version__, "seeds": spec.seeds,
            "objective": objective(spec), "margin": spec.margin, "arms": {}, "status": "tuning",
        }
        for arm in spec.arms:
            name = optuna_name(spec, arm)
            self.data["arms"][arm.key] = {
                "dataset": arm.dataset, "arm": arm.name, "algo": arm.algo, "arch": arm.arch,
                "options": arm.learner_options(), "fixed": arm.fixed, "search": arm.search,
                "search_space": arm.search_space, "grid": arm.grid, "baseline_of": arm.baseline,
                "is_baseline": arm.is_baseline, "optuna_study": name, "sampler": sampler_record(name, arm)[1],
                "tuning": None, "final": None,
            }

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        write_json(self.data, self.path)


def _bar(total: int, initial: int, progress: bool) -> Any:
    return tqdm(total=total, initial=initial, desc="study", unit="run", disable=not progress or None,
                dynamic_ncols=True)


def _tune(spec: StudySpec, storage: Any, url: str | None, study_dir: Path, workers: int, heartbeat: int,
          bar: Any, studies: dict[str, optuna.Study]) -> None:
    """Run every arm's slots with ``workers`` processes (in this process when 1)."""
    def done() -> int:
        return sum(slot_counts(s)["done"] for s in studies.values())

    if workers > 1:
        procs = start_workers(workers, spec, url, study_dir, heartbeat)
        try:
            while any([p.is_alive() for p in procs]):  # a list: every dead child is reaped
                bar.n = done()
                bar.refresh()
                time.sleep(1.0)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        lost = [p.exitcode for p in procs if p.exitcode != 0]
        if lost:
            tqdm.write(f"{len(lost)} worker(s) exited abnormally ({lost}); their slots are re-run here")
    # In-process (one worker), or the sweep after the workers: every local worker is gone now.
    Worker(spec, storage, heartbeat=heartbeat, on_trial=lambda: bar.update(1)).run(all_local_dead=True)
    bar.n = done()
    bar.refresh()


def _tuning_record(study: optuna.Study, metric: str) -> dict[str, Any]:
    counts = slot_counts(study)
    trials = study.get_trials(deepcopy=False)
    seconds = sum(float(t.user_attrs.get("train_seconds", 0.0)) for t in trials)
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete is not None and t.datetime_start is not None)
    best = study.best_trial if counts["complete"] else None
    return {"trials_complete": counts["complete"], "trials_pruned": counts["pruned"],
            "trials_failed": counts["failed"], "seconds": wall, "train_seconds": seconds,
            "best_params": dict(best.params) if best else None, "best_value": best.value if best else None,
            "best_trial": best.number if best else None, "metric": f"val_{metric}"}


def run_study(spec_or_path: StudySpec | str | Path | dict[str, Any], storage: str | None = None, workers: int = 1,
              out: str | Path | None = None, progress: bool = True, *, heartbeat_interval: int = 60,
              tune_only: bool = False, report: bool = True) -> dict[str, Any]:
    """Run (or resume) a study and return its summary.

    Args:
        spec_or_path: a TOML spec path, a parsed spec dict, or a :class:`StudySpec`.
        storage: an Optuna RDB URL (``postgresql+psycopg://user:pw@host/db``; ``sqlite:///f.db`` for
            one worker), or ``journal:PATH``; default: the journal file ``DIR/journal.log``.
        workers: local worker processes sharing the storage.
        out: the study directory (default ``./studies_out/<name>``).
        progress: a progress bar over trials and final runs, and the summary on stdout.
        heartbeat_interval: seconds between a running trial's heartbeats (a trial whose beat stopped for
            3x that is retried elsewhere).
        tune_only: only run tuning slots (a helper machine on a shared RDB storage).
        report: write the report (``localearn.studies.report.write_report``) at the end.
    """
    spec = spec_or_path if isinstance(spec_or_path, StudySpec) else load_spec(spec_or_path)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if heartbeat_interval < 1:
        raise ConfigError(f"--heartbeat must be >= 1 second, got {heartbeat_interval}")
    if workers > 1 and storage is not None and storage.startswith("sqlite"):
        raise ConfigError("sqlite storage is for one worker; use the default journal file or PostgreSQL "
                          "(postgresql+psycopg://...) for --workers > 1")
    check_url(storage)  # before anything is written: a mistyped URL must not become a file
    study_dir = Path(out) if out is not None else Path("studies_out") / spec.name
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out names a file, or a folder below one, or no permission
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot use {study_dir} as the study directory ({why})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, study_dir)
    record = _Record(spec, study_dir, describe(storage, study_dir))
    studies: dict[str, optuna.Study] = {}
    for arm in spec.arms:
        entry = record.data["arms"][arm.key]
        attrs = {"localearn": {k: record.data[k] for k in ("protocol", "stop_rule", "pruner", "localearn_version")},
                 "sampler": entry["sampler"], "optuna_version": optuna.__version__, "arm": arm.key,
                 "algo": arm.algo, "arch": arm.arch, "baseline_of": arm.baseline}
        studies[arm.key] = ensure_study(store, entry["optuna_study"], spec.trials, attrs, direction=spec.direction,
                                        points=arm.points() * (spec.trials if arm.search == "tpe" else 1),
                                        objective=record.data["objective"])
    # The spec is kept only once the storage accepted it (a refused budget change keeps the old one).
    if isinstance(spec_or_path, (str, Path)) and Path(spec_or_path).resolve() != (study_dir / "spec.toml").resolve():
        shutil.copyfile(spec_or_path, study_dir / "spec.toml")
    record.save(status="tuning")
    # Resume: fail trials orphaned by a dead run of this host and re-queue slots lost to a crash or
    # Ctrl-C, before any worker starts (a duplicate this races into yields); a stopped heartbeat
    # elsewhere is seen by the workers' watch.
    for study in studies.values():
        repair_orphans(study, store, all_local_dead=not is_rdb(storage))
        requeue_lost(study, store)
    finals = 0 if tune_only else len(spec.arms) * len(spec.seeds)
    done_runs = sum(1 for a in spec.arms for s in spec.seeds if (run_dir(study_dir, a, s) / "run.json").is_file())
    bar = _bar(len(spec.arms) * spec.trials + finals,
               sum(slot_counts(s)["done"] for s in studies.values()) + done_runs, progress)
    try:
        _tune(spec, store, storage, study_dir, workers, heartbeat_interval, bar, studies)
        for arm in spec.arms:
            record.data["arms"][arm.key]["tuning"] = _tuning_record(studies[arm.key], spec.metric)
        record.save()
        if tune_only:
            return {}
        configs = {arm.key: best_config(studies[arm.key], arm) for arm in spec.arms}
        for ds in spec.datasets:  # Rule 4: no two searched arms may have drawn identical values
            try:  # (grid and fixed arms draw nothing: equal grid points are the spec's choice)
                check_no_collisions({k: c["params"] for k, c in configs.items() if k.startswith(f"{ds}/")
                                     and c["params"] and spec.arm(k).search == "tpe"})
            except ValueError as exc:
                raise LocalearnError(str(exc)) from None
        record.save(status="final")
        runs: dict[str, dict[int, RunRecord]] = {}
        for arm in sorted(spec.arms, key=lambda a: not a.is_baseline):  # backprop first (Protocol B)
            epochs = None
            if spec.protocol == "matched_passes" and not arm.is_baseline and arm.baseline:
                epochs = matched_epochs(spec, arm, configs[arm.key], list(runs[arm.baseline].values()))
            best = configs[arm.key]
            record.data["arms"][arm.key]["final"] = {"config": {**best["train"], **best["learner_options"]},
                                                     **best, "epochs_per_unit": epochs}
            record.save()
            runs[arm.key] = {}
            for seed in spec.seeds:
                path = run_dir(study_dir, arm, seed)
                counted = (path / "run.json").is_file()  # already in the bar's initial count
                runs[arm.key][seed] = final_run(spec, arm, configs[arm.key], seed, path, epochs)
                bar.update(0 if counted else 1)
        record.save(status="complete")
    finally:
        bar.close()
    summary: dict[str, Any] = {}
    if report:
        summary = write_report(study_dir, storage=storage)
    if progress:
        print("\n".join(["", *summary_lines(spec, runs), f"  study directory {study_dir}"]))
    if report:  # where to look, even without the summary (--no-progress)
        print(study_dir / "report.md")
    return summary or {"study_dir": str(study_dir), "runs": {k: list(v.values()) for k, v in runs.items()}}

