"""What the study runner relies on in Optuna's storages, checked on a journal file and on SQLite
(and on PostgreSQL when ``LOCALEARN_TEST_PG_URL`` is set, as ``.ci/run`` does).

The exact budget (issue #22 item 5) uses public API only: slots queued with ``enqueue_trial``, a
slot popped by the atomic WAITING -> RUNNING state change, outcomes reported with ``Study.tell``,
a dead worker's slot failed (attribute first, then the FAIL as the claim) and re-queued with
``add_trial``. If an Optuna release changes any of these, a test here fails before a study
silently loses or duplicates a slot; pyproject pins the range verified.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from localearn.studies.storage import (
    READY_ATTR,
    Heartbeat,
    StaleWatch,
    ensure_study,
    open_storage,
    pop_slot,
    repair_orphans,
    requeue,
    slot_counts,
    trial_id,
)
from localearn.studies.trial import SlotTPESampler
from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import GridSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from packaging.specifiers import SpecifierSet

from localearn.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("error::optuna.exceptions.ExperimentalWarning")
KINDS = ["journal", "sqlite", *(["postgresql"] if os.environ.get("LOCALEARN_TEST_PG_URL") else [])]


def _url(kind: str, tmp_path: Path) -> str:
    return {"journal": f"journal:{tmp_path / 'j.log'}", "sqlite": f"sqlite:///{tmp_path / 's.db'}",
            "postgresql": os.environ.get("LOCALEARN_TEST_PG_URL", "")}[kind]


@pytest.fixture(params=KINDS)
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BaseStorage, BaseStorage, str]]:
    """Two handles on one storage (two workers' views) and a fresh study name."""
    url = _url(request.param, tmp_path)
    yield open_storage(url, tmp_path), open_storage(url, tmp_path), f"contract-{uuid.uuid4().hex[:8]}"


def _load(storage: BaseStorage, name: str, **kw: Any) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage, **kw)


def test_slots_are_waiting_trials_numbered_from_zero(two: tuple[BaseStorage, BaseStorage, str]) -> None:
    storage, _, name = two
    study = ensure_study(storage, name, 3, {"arm": "a"})
    assert [(t.number, t.state, t.user_attrs, t.params) for t in study.trials] == [
        (i, TrialState.WAITING, {"slot": i}, {}) for i in range(3)]
    assert study.user_attrs[READY_ATTR] == 3 and study.user_attrs["arm"] == "a"
    assert slot_counts(study) == {"complete": 0, "pruned": 0, "failed": 0, "done": 0, "waiting": 3, "running": 0,
                                  "lost": 0}
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # creation is the one atomic step
        optuna.create_study(study_name=name, storage=storage)


def test_a_slot_pops_for_one_worker_only_and_no_trial_is_ever_created(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    a, b, name = two
    ensure_study(a, name, 1, {})
    study_a, study_b = _load(a, name), _load(b, name)
    popped = pop_slot(study_a, a)
    assert popped is not None
    trial, tid = popped
    assert trial.number == 0 and trial_id(study_b, b, 0) == tid
    assert b.set_trial_state_values(tid, state=TrialState.RUNNING) is False  # the other worker loses the race
    assert pop_slot(study_b, b) is None  # nothing waits: no fresh, unbudgeted trial
    assert study_a.tell(trial, 0.5).state == TrialState.COMPLETE
    with pytest.raises(UpdateFinishedTrialError):  # a finished slot is never popped again
        b.set_trial_state_values(tid, state=TrialState.RUNNING)
    with pytest.raises(UpdateFinishedTrialError):  # nor takes an attribute (the claim in repairs relies on it)
        b.set_trial_user_attr(tid, "failure", "late")
    assert len(_load(b, name).trials) == 1


def test_tell_reports_each_outcome_and_skips_a_trial_failed_elsewhere(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    a, b, name = two
    study = ensure_study(a, name, 3, {})
    done = []
    for outcome in ("value", "pruned", "failed_elsewhere"):
        popped = pop_slot(study, a)
        assert popped is not None
        trial, tid = popped
        trial.report(0.25, 1)
        if outcome == "value":
            done.append(study.tell(trial, 0.75))
        elif outcome == "pruned":
            done.append(study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True))
        else:
            assert b.set_trial_state_values(tid, state=TrialState.FAIL)  # a repair claimed it
            done.append(study.tell(trial, 0.9, skip_if_finished=True))
    assert [(t.state, t.value) for t in done] == [(TrialState.COMPLETE, 0.75), (TrialState.PRUNED, 0.25),
                                                  (TrialState.FAIL, None)]


def test_pop_runs_the_samplers_before_trial_and_a_grid_slot_runs_its_queued_point(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    storage, _, name = two
    points = [{"lr": 0.01, "s_ssl": 2.0}, {"lr": 0.03, "s_ssl": 2.0}]
    ensure_study(storage, name, 2, {}, points=points)
    grid = {"lr": [0.01, 0.03], "s_ssl": [2.0]}
    study = _load(storage, name, sampler=GridSampler(grid, seed=1))
    with pytest.raises(ConfigError, match="a grid cannot change once a study started"):
        ensure_study(storage, name, 2, {}, points=[{"lr": 0.01, "s_ssl": 2.0}, {"lr": 0.1, "s_ssl": 2.0}])
    got = []
    while (popped := pop_slot(study, storage)) is not None:
        trial = popped[0]
        got.append({k: trial.suggest_categorical(k, v) for k, v in grid.items()})
        with pytest.raises(ValueError, match="All parameters must be specified"):  # no value outside the grid
            trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
        study.tell(trial, 1.0)
    assert got == points
    calls: list[int] = []

    class Spy(SlotTPESampler):
        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            calls.append(int(trial.user_attrs["slot"]))
            super().before_trial(study, trial)

    ensure_study(storage, name + "-tpe", 2, {})
    tpe = _load(storage, name + "-tpe", sampler=Spy(7))
    for _ in range(2):
        popped = pop_slot(tpe, storage)
        assert popped is not None
        popped[0].suggest_float("lr", 1e-5, 1e-2, log=True)
        tpe.tell(popped[0], 0.1)
    assert calls == [0, 1]  # the per-slot seed is set before each draw, as study.ask() would


def test_a_requeued_slot_keeps_its_point_and_slot_without_the_dead_workers_attributes(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    storage, _, name = two
    ensure_study(storage, name, 1, {}, points=[{"lr": 0.03}])
    study = _load(storage, name, sampler=GridSampler({"lr": [0.03]}))
    popped = pop_slot(study, storage)
    assert popped is not None
    trial, tid = popped
    trial.suggest_categorical("lr", [0.03])
    for key, value in (("worker", "h:1"), ("heartbeat", 3), ("failure", "gone")):
        storage.set_trial_user_attr(tid, key, value)
    assert storage.set_trial_state_values(tid, state=TrialState.FAIL)
    requeue(study, storage, storage.get_trial(tid))
    failed, again = study.get_trials(deepcopy=False)
    assert again.state == TrialState.WAITING and again.params == {"lr": 0.03} and again.user_attrs == {"slot": 0}
    assert again.system_attrs["failed_trial"] == failed.number and again.system_attrs["retry_history"] == [0]
    assert slot_counts(study)["waiting"] == 1 and slot_counts(study)["failed"] == 0  # a crash is not an outcome
    popped = pop_slot(study, storage)
    assert popped is not None and popped[0].suggest_categorical("lr", [0.03]) == 0.03


def test_a_trial_whose_heartbeat_stopped_is_failed_with_its_reason_and_requeued(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    a, b, name = two
    study = ensure_study(a, name, 1, {})
    popped = pop_slot(study, a)
    assert popped is not None
    tid = popped[1]
    with Heartbeat(a, tid, interval=3600):  # its first beat is immediate
        pass
    a.set_trial_user_attr(tid, "worker", "elsewhere:123")  # another host: no process to look up
    now = [0.0]
    watch = StaleWatch(grace=10.0, clock=lambda: now[0])
    observer = _load(b, name)
    assert observer.trials[0].user_attrs["heartbeat"] == 1
    assert repair_orphans(observer, b, watch=watch) == 0  # first seen
    now[0] = 8.0
    a.set_trial_user_attr(tid, "heartbeat", 2)  # it beats: alive
    assert repair_orphans(observer, b, watch=watch) == 0
    now[0] = 17.0  # 9 s since the beat changed: within grace
    assert repair_orphans(observer, b, watch=watch) == 0
    now[0] = 18.5
    assert repair_orphans(observer, b, watch=watch) == 1
    assert repair_orphans(observer, b, watch=watch) == 0  # claimed once
    failed, requeued = observer.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["failure"] == "worker elsewhere:123 stopped sending heartbeats"
    assert requeued.state == TrialState.WAITING and requeued.user_attrs == {"slot": 0}


def test_the_best_trial_follows_the_objectives_direction_and_a_started_objective_is_kept(
        two: tuple[BaseStorage, BaseStorage, str]) -> None:
    storage, _, name = two
    goal = {"task": "autoencoder", "metric": "mse", "direction": "minimize", "precision": "fp32"}
    study = ensure_study(storage, name, 3, {}, direction="minimize", objective=goal)
    for value in (0.3, 0.1, 0.2):
        popped = pop_slot(study, storage)
        assert popped is not None
        study.tell(popped[0], value)
    assert study.best_trial.value == 0.1
    with pytest.raises(ConfigError, match="an objective or precision cannot change"):
        ensure_study(storage, name, 3, {}, direction="minimize", objective={**goal, "precision": "bf16"})
    assert ensure_study(storage, name, 3, {}, direction="minimize", objective=goal).best_trial.value == 0.1


def test_pyproject_pins_the_optuna_range_verified_here() -> None:
    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("optuna"))
    spec = SpecifierSet(pin.removeprefix("optuna"))
    assert optuna.__version__ in spec, f"installed Optuna {optuna.__version__} is outside the pin {pin}"
    assert "<" in str(spec), f"{pin}: pin an upper bound, the storage behaviour above is verified per major release"
