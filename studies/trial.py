"""Tuning trials: the sampler, the pruner, the search space and the objective (STUDY_PROTOCOL Rule 4).

Every arm gets the same objective: the study task's metric on the validation split of the whole
model, in the metric's direction (accuracy and ROC-AUC maximised, MSE minimised), after the
Trainer's one stopping rule, with the test split never evaluated (``evaluate_test=False``). A
trial's run is resolved like every other run (:func:`localearn.runspec.resolve_run`: the arm's
values, then the learner's recipe, then defaults) under the study's budget, rule and precision.
A TPE arm's sampler is seeded from SHA-256 of its Optuna study name (``sampler_seed``) and
re-seeded per slot, so that parallel workers never draw the same startup configuration; a grid
or fixed arm runs the points queued as its slots, under Optuna's GridSampler. A run whose status
is not ``complete`` (diverged, ...) is a FAILED trial with its reason, never a result.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from localearn.studies.arms import RULE_KEYS, STUDY_ONLY, TRAIN_VALUES, Arm
from localearn.studies.protocol import sampler_seed, trial_seed
from localearn.studies.spec import StudySpec
from localearn.studies.storage import slot_taken, worker_id
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GridSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from localearn.callbacks import OptunaPruning
from localearn.data import DataBundle
from localearn.errors import ConfigError
from localearn.registry import get_algorithm
from localearn.run import execute
from localearn.runrecord import RunRecord
from localearn.runspec import RunSpec, resolve_run


class TrialFailed(Exception):
    """The trial's run did not complete (diverged, ...): its slot's outcome is FAIL."""


class SlotTPESampler(BaseSampler):
    """Optuna's TPE, seeded with ``seed`` and re-seeded per slot with SHA-256(seed, slot).

    A plain seeded TPE in N workers would give N identical random-startup draws; per-slot seeds
    keep a single-worker study reproducible and parallel draws independent.
    """

    def __init__(self, seed: int, **tpe_args: Any) -> None:
        self.seed, self.tpe_args = seed, tpe_args
        self._inner = TPESampler(seed=seed, **tpe_args)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        slot = int(trial.user_attrs.get("slot", trial.number))
        self._inner = TPESampler(seed=trial_seed(f"sampler:{self.seed}", slot), **self.tpe_args)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # pragma: no cover - Optuna calls it only for n_jobs > 1
        self._inner.reseed_rng()


def sampler_record(optuna_study: str, arm: Arm | None = None) -> tuple[BaseSampler, dict[str, Any]]:
    """The arm's sampler and its record: TPE (class, seed, every argument, Optuna version), or for
    a grid or fixed arm Optuna's GridSampler over its grid (empty when fixed: one point)."""
    seed = sampler_seed(optuna_study)
    if arm is not None and arm.search != "tpe":
        # GridSampler alone may run a point twice under concurrent workers (its docstring); the points
        # are queued as the arm's slots instead, and a value outside them is an error, never a draw.
        return GridSampler(arm.grid, seed=seed), {
            "class": "GridSampler", "search": arm.search, "grid": arm.grid, "points": len(arm.points()),
            "seed": seed, "optuna_version": optuna.__version__, "queued": "one slot per grid point (enqueue_trial)"}
    sampler = SlotTPESampler(seed)
    args = {n: p.default for n, p in inspect.signature(TPESampler.__init__).parameters.items()
            if n not in ("self", "seed") and p.default is not inspect.Parameter.empty}
    args = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in args.items()}
    return sampler, {"class": "TPESampler", "seed": seed, "args": args, "optuna_version": optuna.__version__,
                     "per_slot_seed": "first 32 bits of SHA-256('sampler:<seed>' NUL <slot>)"}


def make_pruner(policy: str) -> optuna.pruners.BasePruner:
    """The one pruner policy of the study (every arm), on whole-model val accuracy per data pass."""
    if policy == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if policy == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


class _SpaceTrial:
    """What a learner's ``search_space(trial)`` sees: the arm's fixed values and range overrides
    replace the learner's own suggestions of the same name."""

    def __init__(self, trial: Any, arm: Arm) -> None:
        self.trial, self.arm = trial, arm

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)

    def _pick(self, name: str, default: Any) -> Any:
        if name in self.arm.fixed:
            return self.arm.fixed[name]
        if name in self.arm.search_space:
            return suggest(self.trial, name, self.arm.search_space[name])
        return default()

    def suggest_float(self, name: str, low: float, high: float, **kw: Any) -> Any:
        return self._pick(name, lambda: self.trial.suggest_float(name, low, high, **kw))

    def suggest_int(self, name: str, low: int, high: int, **kw: Any) -> Any:
        return self._pick(name, lambda: self.trial.suggest_int(name, low, high, **kw))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(name, lambda: self.trial.suggest_categorical(name, choices))


def suggest(trial: Any, name: str, rng: dict[str, Any]) -> Any:
    """Suggest ``name`` from a spec range: ``{low, high[, log, step, type]}`` or ``{choices}``."""
    if "choices" in rng:
        return trial.suggest_categorical(name, rng["choices"])
    extra = {k: rng[k] for k in ("log", "step") if k in rng}
    if rng.get("type") == "int":
        return trial.suggest_int(name, int(rng["low"]), int(rng["high"]), **extra)
    return trial.suggest_float(name, float(rng["low"]), float(rng["high"]), **extra)


def arm_params(trial: Any, arm: Arm) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trial's (training values, learner options): a TPE arm's learner space with the arm's
    overrides, a grid arm's point, a fixed arm's ``fixed`` values alone (the recipe does the rest)."""
    if arm.search == "tpe":
        params = dict(get_algorithm(arm.algo).search_space(_SpaceTrial(trial, arm)))
        for name, rng in arm.search_space.items():
            if name not in params:
                params[name] = suggest(trial, name, rng)
    else:
        params = {name: trial.suggest_categorical(name, values) for name, values in arm.grid.items()}
    params.update(arm.fixed)
    return split_params(arm, params)


def split_params(arm: Arm, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keys that are TrainConfig values go to the trainer, the rest are learner options."""
    rules = sorted(set(params) & (set(RULE_KEYS) | set(STUDY_ONLY) | {"epochs"}))
    if rules:
        raise ConfigError(f"{arm.algo}.search_space tunes {', '.join(rules)}: a budget or stopping rule cannot differ "
                          "between arms, nor the study's task or precision (docs/concepts/protocol.md#asymmetries)")
    train = {k: v for k, v in params.items() if k in TRAIN_VALUES}
    return train, {k: v for k, v in params.items() if k not in train}


def train_config(spec: StudySpec, seed: int, **overrides: Any) -> dict[str, Any]:
    """The budget, stopping rule and precision every arm shares, plus the arm's values."""
    cfg: dict[str, Any] = {"epochs": spec.epochs, "patience": spec.patience, "restore_best": spec.restore_best,
                           "stop_metric": None if spec.stop_metric == "auto" else spec.stop_metric,
                           "seed": seed, "device": spec.device, "progress": False, "precision": spec.precision}
    if spec.batch_size is not None:
        cfg["batch_size"] = spec.batch_size
    cfg.update(overrides)
    return cfg


def arm_run(spec: StudySpec, arm: Arm, train: dict[str, Any], options: dict[str, Any], seed: int,
            **overrides: Any) -> RunSpec:
    """One run of ``arm`` (a trial's or a final one), resolved as ``localearn.fit`` resolves its runs:
    the study's and the arm's values, then the learner's recipe, then defaults."""
    settings = {**arm.settings, **({"task": spec.task} if spec.task != "classification" else {})}
    return resolve_run(arm.algo, arm.dataset, settings=settings, learner_options={**arm.options, **options},
                       dataset_options=spec.dataset_options, data_dir=spec.data_dir, given_by="study",
                       **train_config(spec, seed, **train, **overrides))


def objective(spec: StudySpec, arm: Arm, data: DataBundle, optuna_study: str) -> Callable[[optuna.Trial], float]:
    """The arm's Optuna objective: the task's metric of the whole model on validation, test never touched."""

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        if "slot" not in trial.user_attrs:  # never happens: workers only pop queued slots
            raise optuna.TrialPruned("not a budgeted slot")
        slot = int(trial.user_attrs["slot"])
        if slot_taken(trial.study, slot, trial.number):  # a re-queue raced a live retry: yield
            trial.set_user_attr("duplicate_of_slot", slot)
            raise optuna.TrialPruned(f"slot {slot} is already run by another trial")
        seed = trial_seed(optuna_study, slot)
        train, options = arm_params(trial, arm)
        # No test split, no memory hooks, no checkpoints, no bars: a trial measures only its objective.
        run_spec = arm_run(spec, arm, train, options, seed, evaluate_test=False, measure_memory=False)
        result = execute(run_spec, data=data, callbacks=[OptunaPruning(trial)])
        record = RunRecord.from_dict(result)
        for key, value in (("seed", seed), ("status", record.status), ("data_passes", record.data_passes),
                           ("train_seconds", record.train_seconds), (f"val_{spec.metric}", record.val)):
            trial.set_user_attr(key, value)
        if not record.complete or record.val is None:
            reason = (record.diverged or {}).get("reason") or record.status
            trial.set_user_attr("failure", f"run {record.status}: {reason}")
            trial.set_user_attr("run_failed", True)
            raise TrialFailed(reason)
        return float(record.val)

    return run


def run_trial(study: optuna.Study, trial: optuna.Trial, fn: Callable[[optuna.Trial], float]) -> FrozenTrial:
    """Run ``fn`` on a popped slot and report its outcome with ``Study.tell`` (skipped when a repair
    already failed the trial elsewhere): COMPLETE, PRUNED, or FAIL (a crash is re-raised)."""
    try:
        value = fn(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    except TrialFailed:
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except BaseException:
        with contextlib.suppress(Exception):  # the crash is what the user must see, not a storage error after it
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    return study.tell(trial, value, skip_if_finished=True)
