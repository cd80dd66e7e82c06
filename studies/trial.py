"""Tuning trials: the sampler, the pruner, the search space and the objective (STUDY_PROTOCOL Rule 4).

Every arm gets the same objective: whole-model validation accuracy after the Trainer's one
stopping rule, with the test split never evaluated (``evaluate_test=False``). The sampler is TPE
seeded from SHA-256 of the arm's Optuna study name (``sampler_seed``), re-seeded per slot so that
parallel workers never draw the same startup configuration. A run whose status is not
``complete`` (diverged, ...) is a FAILED trial with its reason, never a result.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import optuna
from localearn.studies.protocol import sampler_seed, trial_seed
from localearn.studies.spec import FIXED_KEYS, RULE_KEYS, Arm, StudySpec
from localearn.studies.storage import slot_taken, worker_id
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from localearn.callbacks import OptunaPruning
from localearn.data import DataBundle
from localearn.errors import ConfigError
from localearn.registry import get_algorithm
from localearn.run import build_learner
from localearn.trainer import TrainConfig, Trainer
from localearn.utils import seed_everything


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


def sampler_record(optuna_study: str) -> tuple[SlotTPESampler, dict[str, Any]]:
    """The arm's sampler and its record (class, seed, every TPE argument, Optuna version)."""
    seed = sampler_seed(optuna_study)
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
    """The trial's (training values, learner options): the learner's space with the arm's overrides."""
    params = dict(get_algorithm(arm.algo).search_space(_SpaceTrial(trial, arm)))
    for name, rng in arm.search_space.items():
        if name not in params:
            params[name] = suggest(trial, name, rng)
    params.update(arm.fixed)
    return split_params(arm, params)


def split_params(arm: Arm, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keys that are TrainConfig values go to the trainer, the rest are learner options."""
    rules = sorted(set(params) & (set(RULE_KEYS) | {"epochs"}))
    if rules:
        raise ConfigError(f"{arm.algo}.search_space tunes {', '.join(rules)}: a budget or stopping rule "
                          "cannot differ between arms (STUDY_PROTOCOL §2.1)")
    train = {k: v for k, v in params.items() if k in FIXED_KEYS}
    return train, {k: v for k, v in params.items() if k not in train}


def train_config(spec: StudySpec, seed: int, **overrides: Any) -> dict[str, Any]:
    """The stopping rule and budget every arm shares, plus the arm's tuned values."""
    cfg: dict[str, Any] = {"epochs": spec.epochs, "patience": spec.patience, "restore_best": spec.restore_best,
                           "stop_metric": None if spec.stop_metric == "auto" else spec.stop_metric,
                           "seed": seed, "device": spec.device, "progress": False}
    if spec.batch_size is not None:
        cfg["batch_size"] = spec.batch_size
    cfg.update(overrides)
    return cfg


def objective(spec: StudySpec, arm: Arm, data: DataBundle, optuna_study: str) -> Any:
    """The arm's Optuna objective: validation accuracy of the whole model, test never touched."""

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        if "slot" not in trial.user_attrs:  # never happens: the storage refuses unbudgeted trials
            raise optuna.TrialPruned("not a budgeted slot")
        slot = int(trial.user_attrs["slot"])
        if slot_taken(trial.study, slot, trial.number):  # a re-queue raced a live retry: yield
            trial.set_user_attr("duplicate_of_slot", slot)
            raise optuna.TrialPruned(f"slot {slot} is already run by another trial")
        seed = trial_seed(optuna_study, slot)
        train, options = arm_params(trial, arm)
        # No test split, no memory hooks, no checkpoints, no bars: a trial measures only its objective.
        config = TrainConfig(**train_config(spec, seed, evaluate_test=False, measure_memory=False, **train))
        seed_everything(seed)
        learner = build_learner(arm.algo, data, {**arm.learner_options(), **options})
        trainer = Trainer(learner, data, config, callbacks=[OptunaPruning(trial)],
                          run_info={"algorithm": arm.algo, "dataset": arm.dataset, "trial": trial.number})
        result = trainer.fit()
        metrics = result["metrics"]
        for key, value in (("seed", seed), ("status", result["status"]), ("data_passes", metrics["data_passes"]),
                           ("train_seconds", metrics["train_seconds"]), ("val_accuracy", metrics["val_accuracy"])):
            trial.set_user_attr(key, value)
        if result["status"] != "complete":
            reason = (result.get("diverged") or {}).get("reason") or result["status"]
            trial.set_user_attr("failure", f"run {result['status']}: {reason}")
            trial.set_user_attr("run_failed", True)
            raise TrialFailed(reason)
        return float(metrics["val_accuracy"])

    return run
