"""Optuna storages for studies, and the slot mechanism that makes a budget exact (public API only).

Storage: an embedded ``JournalStorage`` file by default (one machine, no server), or any Optuna RDB
URL; PostgreSQL (``postgresql+psycopg://``) is the multi-machine path. URLs are checked and masked
in :mod:`localearn.studies.urls`.

Exact budgets: an arm's Optuna study is created once with exactly ``trials`` WAITING trials (the
slots, user attr ``slot``; a grid arm's slots each carry their grid point, ``enqueue_trial``).
Workers never ask Optuna for a trial (``Study.ask`` creates a fresh one when none waits): they pop
a WAITING slot themselves (:func:`pop_slot`, the state change WAITING -> RUNNING that the storage
makes atomic: a second popper gets False) and report with ``Study.tell``; so two workers racing
for the last slot cannot both run it, and no unbudgeted trial is ever created. A worker beats
(:class:`Heartbeat`: the trial's ``heartbeat`` attr counts up every interval); a RUNNING trial
whose worker process is gone (this host) or whose beat stopped advancing for the grace period
(:class:`StaleWatch`, timed on the observer's own clock, so hosts need no common clock) is failed
once, with a ``failure`` reason (the attribute first, while the trial still runs; then the FAIL,
the atomic claim: the loser gets ``UpdateFinishedTrialError``), and re-queued with the same params
and slot, so no slot is lost or run twice to completion. ``tests/studies/test_optuna_contract.py``
fails if a storage behaviour this relies on changes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.urls import check_url, describe, is_rdb, journal_path, mask_url, scrub, storage_file
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from localearn.errors import ConfigError

__all__ = ["Heartbeat", "StaleWatch", "check_url", "describe", "ensure_study", "is_rdb", "journal_path", "mask_url",
           "open_storage", "pop_slot", "repair_orphans", "requeue", "requeue_lost", "scrub", "slot_counts",
           "slot_taken", "trial_id", "worker_id"]

READY_ATTR = "localearn_slots"
OBJECTIVE_ATTR = "localearn_objective"
POINTS_ATTR = "localearn_points"
HOST = socket.gethostname()


def open_storage(url: str | None, study_dir: Path, *, create: bool = True) -> BaseStorage:
    """Open the study's storage: the journal file by default, or an Optuna RDB URL. ``create``
    False (``study report``, ``study list``): a journal or SQLite file must exist already."""
    check_url(url)
    held = storage_file(url, study_dir)
    if not create and held is not None and not held.is_file():
        raise ConfigError(f"no storage file at {held}")
    if not is_rdb(url):
        path = journal_path(url, study_dir)
        if path.is_dir():
            raise ConfigError(f"journal storage {path} is a directory; name a file: journal:{path / 'journal.log'}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot use {path} as the journal storage ({why})") from None
    assert url is not None
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):  # SQLAlchemy 2.0 would pick psycopg2; this package depends on psycopg 3
            url = "postgresql+psycopg://" + url[len(prefix):]
    try:
        return RDBStorage(url, engine_kwargs={} if url.startswith("sqlite") else {"pool_pre_ping": True})
    except Exception as exc:  # SQLAlchemy/psycopg errors: one line, never the password
        msg = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        shown = scrub(f"cannot open storage {mask_url(url)}: {msg.replace(url, mask_url(url) or '')}")
        raise ConfigError(shown) from None


def ensure_study(storage: BaseStorage, name: str, trials: int, attrs: dict[str, Any], *,
                 points: list[dict[str, Any]] | None = None, direction: str = "maximize",
                 objective: dict[str, Any] | None = None, wait_seconds: float = 120.0) -> optuna.Study:
    """Create the arm's Optuna study with exactly ``trials`` slots, or load it when it exists.

    ``points``: each slot's queued parameters (a grid arm's points; default none: a search draws
    them). ``objective``: what the trials optimise (metric, direction, precision), which a started
    study keeps. Creation is atomic in both storages (a duplicate name raises), so exactly one
    process queues the slots; the others wait until the creator has marked the study ready.
    """
    points = points if points is not None else [{}] * trials
    if len(points) != trials:
        raise ConfigError(f"study {name!r}: {len(points)} queued points for a budget of {trials} trials")
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=StudyDirection[direction.upper()])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + wait_seconds
        while READY_ATTR not in study.user_attrs:
            if time.monotonic() > deadline:
                raise ConfigError(f"study {name!r} exists but its slots were never queued (its creator died "
                                  "while starting); delete it from the storage and run again") from None
            time.sleep(0.5)
        if study.user_attrs[READY_ATTR] != trials:
            raise ConfigError(f"study {name!r} in this storage has {study.user_attrs[READY_ATTR]} trials per arm, "
                              f"the spec {trials}: a budget cannot change once a study started") from None
        kept = study.user_attrs.get(OBJECTIVE_ATTR, {"task": "classification", "metric": "accuracy",
                                                     "direction": "maximize", "precision": "fp32"})  # an older study
        if objective is not None and kept != objective:
            raise ConfigError(f"study {name!r} in this storage optimises {kept}, the spec {objective}: an objective "
                              "or precision cannot change once a study started") from None
        queued = study.user_attrs.get(POINTS_ATTR, [{}] * trials)
        if queued != points:
            raise ConfigError(f"study {name!r} in this storage queued the points {queued}, the spec {points}: a grid "
                              "cannot change once a study started") from None
        return study
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    if objective is not None:
        study.set_user_attr(OBJECTIVE_ATTR, objective)
    study.set_user_attr(POINTS_ATTR, points)
    for slot, point in enumerate(points):
        study.enqueue_trial(point, user_attrs={"slot": slot})
    study.set_user_attr(READY_ATTR, trials)
    return study


def trial_id(study: optuna.Study, storage: BaseStorage, number: int) -> int:
    """The storage's id of ``study``'s trial ``number`` (public storage API, no private attribute)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def pop_slot(study: optuna.Study, storage: BaseStorage) -> tuple[optuna.Trial, int] | None:
    """Take one WAITING slot of ``study`` (atomically: WAITING -> RUNNING succeeds for one process)
    and open it as a trial, as ``Study.ask`` does; None when no slot waits. Never creates a trial."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        tid = trial_id(study, storage, t.number)
        try:
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                return optuna.Trial(study, tid), tid  # runs the sampler's before_trial, as ask() does
        except UpdateFinishedTrialError:
            continue  # another process ran it meanwhile
    return None


class Heartbeat:
    """While a trial runs, count its ``heartbeat`` user attr up every ``interval`` seconds (a thread)."""

    def __init__(self, storage: BaseStorage, tid: int, interval: float) -> None:
        self.storage, self.tid, self.interval = storage, tid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="localearn-heartbeat")

    def _beat(self) -> None:
        beat = 0
        while True:
            beat += 1
            # A storage hiccup must not end the trial: a missed beat only risks a retry elsewhere.
            with contextlib.suppress(Exception):
                self.storage.set_trial_user_attr(self.tid, "heartbeat", beat)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class StaleWatch:
    """Which RUNNING trials stopped beating: a trial whose ``heartbeat`` attr has not changed for
    ``grace`` seconds of this process's clock since it was first seen (no cross-host clock needed)."""

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace, self.clock = grace, clock
        self.seen: dict[tuple[str, int], tuple[Any, float]] = {}

    def stale(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        key, beat, now = (study.study_name, trial.number), trial.user_attrs.get("heartbeat"), self.clock()
        if key not in self.seen or self.seen[key][0] != beat:
            self.seen[key] = (beat, now)
            return False
        return now - self.seen[key][1] > self.grace


def worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


def _dead_here(owner: str | None) -> bool:
    """Whether ``owner`` (``host:pid``) names a process of this host that no longer runs."""
    if owner is None:
        return False
    host, _, pid = owner.rpartition(":")
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: dead too
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def requeue(study: optuna.Study, storage: BaseStorage, trial: FrozenTrial) -> None:
    """Queue ``trial``'s slot again with the same params (a grid slot keeps its point), without its
    dead worker's attributes."""
    keep = {k: v for k, v in trial.user_attrs.items() if k not in ("worker", "failure", "heartbeat")}
    retries = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions, user_attrs=keep,
        system_attrs={**trial.system_attrs, "failed_trial": retries[0], "retry_history": retries}))


def repair_orphans(study: optuna.Study, storage: BaseStorage, *, all_local_dead: bool = False,
                   watch: StaleWatch | None = None) -> int:
    """Fail RUNNING trials whose worker is gone and re-queue their slots; returns how many.

    A trial is orphaned when its ``worker`` attr names a dead process of this host; when ``watch``
    saw its heartbeat stop (any host); or, on a journal (one host) when ``all_local_dead`` (no
    worker of this run is alive: a resume, or the sweep after workers exited), when it never
    recorded a worker (killed between pop and the first attribute).
    """
    repaired = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        local = isinstance(storage, JournalStorage) and all_local_dead
        if _dead_here(owner) or (local and (owner is None or owner.startswith(f"{HOST}:"))):
            reason = f"worker {owner or '?'} died mid-trial"
        elif watch is not None and watch.stale(study, t):
            reason = f"worker {owner or '?'} stopped sending heartbeats"
        else:
            continue
        tid = trial_id(study, storage, t.number)
        try:  # the attribute first: a finished trial takes none; the FAIL is the atomic claim
            storage.set_trial_user_attr(tid, "failure", reason)
            if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another process failed it first and re-queues it
        requeue(study, storage, storage.get_trial(tid))
        repaired += 1
    return repaired


def slot_taken(study: optuna.Study, slot: int, number: int) -> bool:
    """Whether another trial already finished ``slot`` or runs it with a lower number (it wins)."""
    return any(t.number != number and t.user_attrs.get("slot") == slot
               and (_slot_done(t) or (t.state == TrialState.RUNNING and t.number < number))
               for t in study.get_trials(deepcopy=False))


def _slot_done(t: FrozenTrial) -> bool:
    # a run failure (diverged, ...) is the slot's outcome and is not retried; a crash is
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and bool(t.user_attrs.get("run_failed")))


def slot_counts(study: optuna.Study) -> dict[str, int]:
    """Slots by outcome: ``complete``, ``pruned``, ``failed``, ``done`` (their sum), ``waiting``,
    ``running`` and ``lost`` (no finished, waiting or running trial: a crash to re-queue)."""
    trials = study.get_trials(deepcopy=False)
    counts = {"complete": 0, "pruned": 0, "failed": 0, "done": 0, "waiting": 0, "running": 0, "lost": 0}
    by_slot: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_slot.setdefault(int(t.user_attrs.get("slot", -1 - t.number)), []).append(t)
    for ts in by_slot.values():
        done = sorted((t for t in ts if _slot_done(t)), key=lambda t: t.state != TrialState.COMPLETE)
        if done:
            key = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(done[0].state, "failed")
            counts[key] += 1
            counts["done"] += 1
        elif any(t.state == TrialState.WAITING for t in ts):
            counts["waiting"] += 1
        elif any(t.state == TrialState.RUNNING for t in ts):
            counts["running"] += 1
        else:
            counts["lost"] += 1
    return counts


def requeue_lost(study: optuna.Study, storage: BaseStorage) -> int:
    """Re-queue slots whose every trial failed without a run failure (Ctrl-C, a crash, a repair
    that died between failing and re-queueing). Call only when no worker runs."""
    by_slot: dict[int, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if "slot" in t.user_attrs:
            by_slot.setdefault(int(t.user_attrs["slot"]), []).append(t)
    lost = [ts[-1] for ts in by_slot.values() if all(t.state == TrialState.FAIL and not _slot_done(t) for t in ts)]
    for t in lost:
        requeue(study, storage, t)
    return len(lost)
