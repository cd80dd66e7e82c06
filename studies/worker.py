"""Study workers: run the queued slots of every arm until none is waiting or running.

One worker is one process; ``localearn study run --workers N`` starts N of them on the same
storage, and the same command on other machines adds more (RDB storages). A worker loads each
dataset once and trains trials in-process with ``progress=False`` and no checkpoints. It pops
queued slots only (:func:`~localearn.studies.storage.pop_slot`) and reports them with
``Study.tell``, beating while a trial runs; when no slot is waiting but some are running
elsewhere it waits, failing and re-queueing those whose worker died (a dead process of this
host, or a heartbeat that stopped advancing).
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from localearn.studies.spec import Arm, StudySpec
from localearn.studies.storage import (
    Heartbeat,
    StaleWatch,
    open_storage,
    pop_slot,
    repair_orphans,
    requeue_lost,
    slot_counts,
)
from localearn.studies.trial import make_pruner, objective, run_trial, sampler_record

from localearn.data import DataBundle, load_dataset


def optuna_name(spec: StudySpec, arm: Arm) -> str:
    """The arm's Optuna study name: ``<study>/<dataset>/<arm>``."""
    return f"{spec.name}/{arm.key}"


class Worker:
    """Runs slots of every arm of ``spec`` on ``storage`` (one process)."""

    def __init__(self, spec: StudySpec, storage: Any, *, poll_seconds: float = 1.0, heartbeat: float = 60.0,
                 on_trial: Callable[[], None] | None = None) -> None:
        self.spec, self.storage, self.poll, self.heartbeat = spec, storage, poll_seconds, heartbeat
        self.on_trial = on_trial
        self.watch = StaleWatch(grace=3 * heartbeat)  # a worker that missed three beats is gone
        self._data: dict[str, DataBundle] = {}
        self._studies: dict[str, optuna.Study] = {}

    def data(self, dataset: str) -> DataBundle:
        """Each dataset is loaded once per worker process."""
        if dataset not in self._data:
            self._data[dataset] = load_dataset(dataset, self.spec.data_dir, **self.spec.dataset_options)
        return self._data[dataset]

    def study(self, arm: Arm) -> optuna.Study:
        if arm.key not in self._studies:
            name = optuna_name(self.spec, arm)
            sampler, _ = sampler_record(name, arm)
            self._studies[arm.key] = optuna.load_study(study_name=name, storage=self.storage, sampler=sampler,
                                                       pruner=make_pruner(self.spec.pruner))
        return self._studies[arm.key]

    def run_waiting(self, arm: Arm) -> None:
        """Run this arm's waiting slots until none is left to pop."""
        study = self.study(arm)
        fn = objective(self.spec, arm, self.data(arm.dataset), optuna_name(self.spec, arm))
        while (popped := pop_slot(study, self.storage)) is not None:
            trial, tid = popped
            with Heartbeat(self.storage, tid, self.heartbeat):
                self._count(run_trial(study, trial, fn))

    def _count(self, trial: optuna.trial.FrozenTrial) -> None:
        if self.on_trial is not None and (trial.state != optuna.trial.TrialState.FAIL
                                          or trial.user_attrs.get("run_failed")):
            self.on_trial()

    def run(self, *, all_local_dead: bool = False, start: int = 0) -> None:
        """Run every arm's slots; return when every slot of every arm is done."""
        arms = self.spec.arms[start % len(self.spec.arms):] + self.spec.arms[:start % len(self.spec.arms)]
        for arm in arms:  # first pass: take what is waiting, never wait for others
            repair_orphans(self.study(arm), self.storage, all_local_dead=all_local_dead, watch=self.watch)
            if all_local_dead:  # no worker of ours runs: a slot failed by a crash is re-queued
                requeue_lost(self.study(arm), self.storage)
            self.run_waiting(arm)
        while True:
            busy = False
            for arm in arms:
                study = self.study(arm)
                repair_orphans(study, self.storage, all_local_dead=all_local_dead, watch=self.watch)
                counts = slot_counts(study)
                if counts["waiting"]:
                    self.run_waiting(arm)
                    counts = slot_counts(study)
                busy = busy or counts["waiting"] > 0 or counts["running"] > 0
            if not busy:
                return
            time.sleep(self.poll)


def _worker_main(spec: StudySpec, url: str | None, study_dir: str, heartbeat: int, index: int) -> None:
    """Entry point of a spawned worker process."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # N workers share the cores
    storage = open_storage(url, Path(study_dir))
    Worker(spec, storage, heartbeat=heartbeat).run(start=index)


def start_workers(n: int, spec: StudySpec, url: str | None, study_dir: Path, heartbeat: int) -> list[Any]:
    """Start ``n`` worker processes (spawned: no forked torch or database state)."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, url, str(study_dir), heartbeat, i), daemon=False)
             for i in range(n)]
    for p in procs:
        p.start()
    return procs
