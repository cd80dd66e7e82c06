"""Optuna storages for studies, and the slot mechanism that makes a budget exact.

Storage: an embedded ``JournalStorage`` file by default (one machine, no server), or any Optuna RDB
URL; PostgreSQL (``postgresql+psycopg://``) is the multi-machine path, with Optuna's heartbeat: a
trial whose worker died is failed with a ``failure`` reason and its slot re-queued, as the journal's
orphan repair does. URLs are checked and masked in :mod:`localearn.studies.urls`.

Exact budgets: an arm's Optuna study is created once with exactly ``trials`` WAITING trials (the
slots, user attr ``slot``). Workers only run popped slots: the storage refuses to create a fresh
trial while a worker loop runs (``refuse_fresh``), so two workers racing for the last slot cannot
both run it (Optuna pops a WAITING trial atomically in both storages). A stale or orphaned slot
is failed once (the state change is atomic: the loser gets ``UpdateFinishedTrialError``) and
re-queued with the same params and slot, so no slot is lost or run twice to completion.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.urls import check_url, describe, is_rdb, journal_path, mask_url, scrub, storage_file
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from localearn.errors import ConfigError

__all__ = ["NoSlotLeft", "check_url", "describe", "ensure_study", "is_rdb", "journal_path", "mask_url",
           "open_storage", "repair_orphans", "requeue", "requeue_lost", "scrub", "slot_counts", "slot_taken",
           "worker_id"]

READY_ATTR = "localearn_slots"
HOST = socket.gethostname()


class NoSlotLeft(Exception):
    """Raised instead of creating an unbudgeted trial: every slot is taken or finished."""


class _Refusing:
    """Mixin: ``create_new_trial`` without a template (Optuna's "ask for a fresh trial") is refused
    while ``refuse_fresh`` is set; queued and retried trials (which have templates) pass."""

    refuse_fresh = False

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None and self.refuse_fresh:
            raise NoSlotLeft
        return super().create_new_trial(study_id, template_trial)  # type: ignore[misc]


class SlotJournalStorage(_Refusing, JournalStorage):
    """A journal-file storage that only runs budgeted slots."""


class SlotRDBStorage(_Refusing, RDBStorage):
    """An RDB storage (PostgreSQL, SQLite) that only runs budgeted slots; a trial whose worker
    stopped sending heartbeats gets the ``failure`` attribute a journal's orphan gets."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Every caller (our repair_orphans, Optuna's own loop) fails the trials this returns: the
        # attribute goes first, while the trial still runs (a finished trial takes none).
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            owner = self.get_trial(trial_id).user_attrs.get("worker", "?")
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_user_attr(trial_id, "failure", f"worker {owner} stopped sending heartbeats")
        return stale

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Optuna's cache layer (_CachedStorage, which wraps every RDBStorage) calls this one.
        if template_trial is None and self.refuse_fresh:
            raise NoSlotLeft
        return super()._create_new_trial(study_id, template_trial)


def open_storage(url: str | None, study_dir: Path, *, heartbeat_interval: int = 60,
                 grace_period: int | None = None, create: bool = True) -> BaseStorage:
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
            return SlotJournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot use {path} as the journal storage ({why})") from None
    assert url is not None
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):  # SQLAlchemy 2.0 would pick psycopg2; this package depends on psycopg 3
            url = "postgresql+psycopg://" + url[len(prefix):]
    params = inspect.signature(RDBStorage.__init__).parameters
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_interval,
                              "grace_period": grace_period or 3 * heartbeat_interval}
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    kwargs[key] = _retry_stale  # a killed worker's slot always returns, as with the journal
    if not url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SlotRDBStorage(url, **kwargs)
    except Exception as exc:  # SQLAlchemy/psycopg errors: one line, never the password
        msg = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        shown = scrub(f"cannot open storage {mask_url(url)}: {msg.replace(url, mask_url(url) or '')}")
        raise ConfigError(shown) from None


def ensure_study(storage: BaseStorage, name: str, trials: int, attrs: dict[str, Any],
                 wait_seconds: float = 120.0) -> optuna.Study:
    """Create the arm's Optuna study with exactly ``trials`` slots, or load it when it exists.

    Creation is atomic in both storages (a duplicate name raises), so exactly one process queues
    the slots; the others wait until the creator has marked the study ready.
    """
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
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
        return study
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for slot in range(trials):
        study.enqueue_trial({}, user_attrs={"slot": slot})
    study.set_user_attr(READY_ATTR, trials)
    return study


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
    """Queue ``trial``'s slot again with the same params, without its dead worker's attributes."""
    keep = {k: v for k, v in trial.user_attrs.items() if k not in ("worker", "failure")}
    retries = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions, user_attrs=keep,
        system_attrs={**trial.system_attrs, "failed_trial": retries[0], "retry_history": retries}))


def repair_orphans(study: optuna.Study, storage: BaseStorage, *, all_local_dead: bool = False) -> int:
    """Fail RUNNING trials whose worker is gone and re-queue their slots; returns how many.

    RDB storages do this through heartbeats (``fail_stale_trials``). A journal has none, so a
    trial is orphaned when its ``worker`` attr names a dead process of this host, or, when
    ``all_local_dead`` (no worker of this run is alive: a resume, or the sweep after workers
    exited), when it never recorded a worker (killed between pop and the first attribute).
    """
    if not isinstance(storage, JournalStorage):
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9: not the user's concern
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return 0
    repaired = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if not (_dead_here(owner) or (all_local_dead and (owner is None or owner.startswith(f"{HOST}:")))):
            continue
        try:  # the attribute first: a finished trial takes none; the FAIL is the atomic claim
            storage.set_trial_user_attr(t._trial_id, "failure", f"worker {owner or '?'} died mid-trial")
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first and re-queues it
        requeue(study, storage, storage.get_trial(t._trial_id))
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


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """RDB heartbeat callback: re-queue a stale trial's slot as :func:`repair_orphans` does."""
    requeue(study, study._storage, trial)


def requeue_lost(study: optuna.Study, storage: BaseStorage) -> int:
    """Re-queue slots whose every trial failed without a run failure (Ctrl-C, a crash, a retry
    callback that died between failing and re-queueing). Call only when no worker runs."""
    by_slot: dict[int, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if "slot" in t.user_attrs:
            by_slot.setdefault(int(t.user_attrs["slot"]), []).append(t)
    lost = [ts[-1] for ts in by_slot.values() if all(t.state == TrialState.FAIL and not _slot_done(t) for t in ts)]
    for t in lost:
        requeue(study, storage, t)
    return len(lost)
