"""One run resolver: a :class:`RunSpec` from (the caller's values, the learner's recipe, defaults).

``localearn.fit`` (and through it ``localearn train``) and every trial and final run of a study
build their run here, so that a value left unset means the same thing everywhere: the reference
recipe's (:mod:`localearn.recipes`, each value recorded with its source), else TrainConfig's or the
learner's default. A resumed run's spec comes from its checkpoint instead (:func:`resumed_run`),
reading only the checked plain values of :mod:`localearn.rundir` (docs/guides/checkpoints.md#safety).

Run settings that are neither training options nor plain learner options (``arch``, ``schedule``,
``task``) are declared in :data:`SETTINGS`; a study spec's arms accept exactly these keys, so a new
setting added here becomes a spec key as data.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localearn.arch import parse_arch
from localearn.checkpoint import load_checkpoint
from localearn.config import TrainConfig
from localearn.data import DataBundle, canonical_dataset, dataset_kind, load_dataset
from localearn.distributed import env_rank
from localearn.errors import ConfigError, LocalearnError
from localearn.recipes import apply_recipe
from localearn.registry import canonical_name, get_algorithm, list_algorithms
from localearn.rundir import StoredRun, data_folder, ignored_settings, stored_config, stored_run
from localearn.tasks import get_task
from localearn.utils import check_kwargs, keyword_defaults

_LEARNER_SKIP = ("input_shape", "num_classes")
#: run settings beside TrainConfig fields and learner options: name -> accepted types
SETTINGS: dict[str, tuple[type, ...]] = {"arch": (str,), "schedule": (str,), "task": (str,)}


def check_options(algo: str, options: dict[str, Any]) -> None:
    """Reject learner options the learner does not take (listing the ones it does) or mistyped."""
    cls = get_algorithm(algo)
    check_kwargs(cls, options, cls.name, skip=_LEARNER_SKIP)


def check_task(algo: str, task: str) -> None:
    """A ``--task`` the learner cannot train is refused with the learners that can."""
    get_task(task)
    if "task" not in (keyword_defaults(get_algorithm(algo)) or {}):
        able = [n for n in list_algorithms() if "task" in (keyword_defaults(get_algorithm(n)) or {})]
        raise ConfigError(f"{algo} trains only the classification task; --task {task} needs one of: "
                          f"{', '.join(able)}")


def resolved_options(algo: str, options: dict[str, Any]) -> dict[str, Any]:
    """The learner's constructor defaults overlaid with ``options``: what the run really used."""
    defaults = keyword_defaults(get_algorithm(algo), skip=_LEARNER_SKIP) or {}
    out = {n: d for n, d in defaults.items() if d is not inspect.Parameter.empty}
    out.update(options)
    return {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), list, dict)) else v)
            for k, v in out.items()}


def _recipe_defaults(algo: str) -> dict[str, Any]:
    """Fallbacks for training options no recipe sets: TrainConfig's and the learner's optimizer."""
    opt = get_algorithm(algo).default_optimizer
    base = {k: f.default for k, f in TrainConfig.__dataclass_fields__.items()}
    return {**base, "optimizer": opt["name"], "lr": opt["lr"], "weight_decay": opt.get("weight_decay", 0.0)}


@dataclass(frozen=True)
class RunSpec:
    """Everything a run is built from. ``learner_options`` holds the resolved settings the learner
    takes (``arch``, ``schedule``, ``task``); ``recipe`` records every resolved value's source."""

    algorithm: str
    dataset: str
    train: TrainConfig
    learner_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    split_seed: int = 0
    data_dir: str | None = None
    download: bool = False
    recipe: dict[str, dict[str, Any]] | None = None

    @property
    def task(self) -> str:
        return str(self.learner_options.get("task") or "classification")

    def config(self) -> TrainConfig:
        """A copy of the training config (the Trainer adjusts its own, e.g. ``progress`` per rank)."""
        return dataclasses.replace(self.train)

    def load_data(self) -> DataBundle:
        return load_dataset(self.dataset, self.data_dir, download=self.download, split_seed=self.split_seed,
                            **self.dataset_options)

    def run_info(self, learner: Any) -> dict[str, Any]:
        """``run.json``'s identity fields for ``learner`` built from this spec."""
        return {"algorithm": self.algorithm, "dataset": self.dataset, "learner_options": dict(self.learner_options),
                "learner_options_resolved": {**resolved_options(self.algorithm, self.learner_options),
                                             "arch": str(learner.arch), "schedule": learner.schedule_mode},
                "dataset_options": dict(self.dataset_options), "split_seed": self.split_seed,
                "data_dir": self.data_dir, "paper": learner.paper, "recipe": self.recipe}


def _settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The given settings (None dropped), each of its declared type; ``arch`` parsed."""
    out = {k: v for k, v in settings.items() if v is not None}
    for key, value in out.items():
        if key not in SETTINGS:
            raise ConfigError(f"unknown run setting {key!r}; valid: {', '.join(SETTINGS)}")
        if not isinstance(value, SETTINGS[key]):
            raise ConfigError(f"{key} must be a {' or '.join(t.__name__ for t in SETTINGS[key])}, got {value!r}")
    if "schedule" in out and out["schedule"] not in get_algorithm(name).schedules:
        raise ConfigError(f"{name} supports schedule {', '.join(get_algorithm(name).schedules)}, "
                          f"not {out['schedule']!r}")
    if "task" in out:
        check_task(name, out["task"])
    return out


def resolve_run(algo: str | None, dataset: str | None, *, settings: dict[str, Any] | None = None,
                learner_options: dict[str, Any] | None = None, dataset_options: dict[str, Any] | None = None,
                split_seed: int | None = None, data_dir: str | Path | None = None, download: bool = False,
                given_by: str = "argument", **train: Any) -> RunSpec:
    """The run of ``algo`` on ``dataset``: the caller's values, then the recipe's, then defaults.

    Args:
        algo, dataset: names (None: ``mono_forward``; ``digits``, or ``karate`` for a graph learner).
        settings: :data:`SETTINGS` values (``arch``, ``schedule``, ``task``); None or absent: the
            recipe's or the learner's default.
        learner_options, dataset_options: passed to the learner / dataset loader.
        split_seed, data_dir, download: the validation split's seed (default 0), the data folder
            (default ``$LOCALEARN_DATA_DIR`` or ``./data``), whether to fetch missing data.
        given_by: the source recorded for values set here (``cli``, ``study``, ``argument``).
        train: :class:`TrainConfig` fields; None takes the recipe's.
    """
    unknown = sorted(set(train) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(TrainConfig.__dataclass_fields__))}")
    name = canonical_name(algo or "mono_forward")
    graph = get_algorithm(name).supports_graphs
    dataset = canonical_dataset(dataset or ("karate" if graph else "digits"))  # both bundled
    if graph != (dataset_kind(dataset) == "graph"):
        kind = "graph" if graph else "image"
        raise ConfigError(f"{name} takes {kind} data, but dataset {dataset!r} is not {kind} data")
    chosen = _settings(name, dict(settings or {}))
    kwargs, opts, arch, recipe = apply_recipe(name, dataset, train, dict(learner_options or {}), chosen.get("arch"),
                                              _recipe_defaults(name), given_by)
    config = TrainConfig(**kwargs)
    config.validate()
    if arch is not None:
        opts["arch"] = str(parse_arch(arch))  # a bad spec fails before any data is loaded
    opts.update({k: v for k, v in chosen.items() if k != "arch"})
    check_options(name, opts)
    return RunSpec(name, dataset, config, opts, dict(dataset_options or {}),
                   split_seed if split_seed is not None else 0, str(data_dir) if data_dir is not None else None,
                   download, recipe)


def resumed_run(out: Path, checkpoint: Path, *, algo: str | None = None, dataset: str | None = None,
                settings: dict[str, Any] | None = None, learner_options: dict[str, Any] | None = None,
                dataset_options: dict[str, Any] | None = None, split_seed: int | None = None,
                data_dir: str | Path | None = None, **train: Any) -> RunSpec:
    """The run stored in ``checkpoint`` (of the run directory ``out``): its settings win; values
    given here that differ are named in one ``note:`` line on stderr (``device``, ``progress`` and
    the data folder are this machine's choice and apply)."""
    if not checkpoint.is_file():
        raise LocalearnError(f"nothing to resume: {checkpoint} does not exist")
    ckpt = load_checkpoint(checkpoint)
    # Only checked plain values come from the directory; never a path (data_dir) or code (rundir.py).
    run, kept = stored_run(ckpt, checkpoint), stored_config(ckpt, checkpoint)
    if algo is not None and canonical_name(algo) != run.algorithm:
        raise ConfigError(f"{out} holds a {run.algorithm} run, not {algo}")
    if dataset is not None and canonical_dataset(dataset) != run.dataset:
        raise ConfigError(f"{out} holds a run on {run.dataset}, not {dataset}")
    _note_ignored(out, run, kept, train, dict(settings or {}), learner_options, dataset_options, split_seed)
    here = {k: v for k, v in train.items() if k in ("device", "progress") and v is not None}
    config = TrainConfig(**{**kept, **here})
    config.validate()
    check_options(run.algorithm, run.learner_options)
    folder = data_folder(data_dir, out, run.dataset)[0]
    return RunSpec(run.algorithm, run.dataset, config, dict(run.learner_options), dict(run.dataset_options),
                   run.split_seed, str(folder), False, run.recipe)


def _note_ignored(out: Path, run: StoredRun, config: dict[str, Any], train: dict[str, Any], settings: dict[str, Any],
                  learner_options: dict[str, Any] | None, dataset_options: dict[str, Any] | None,
                  split_seed: int | None) -> None:
    """Say in one line which values given with ``--resume`` the stored run overrides."""
    opts = run.learner_options
    arch = settings.get("arch")
    given = {**train, **(learner_options or {}), **settings, "arch": str(parse_arch(arch)) if arch else None}
    default_schedule = get_algorithm(run.algorithm).capabilities()["default_schedule"]
    stored = {**config, **opts, "schedule": opts.get("schedule", default_schedule),
              "task": opts.get("task", settings.get("task"))}
    ignored = ignored_settings(given, stored)
    if dataset_options and dataset_options != run.dataset_options:
        ignored.append(f"dataset options {dataset_options} (kept {run.dataset_options})")
    if split_seed is not None and split_seed != run.split_seed:
        ignored.append(f"split_seed={split_seed} (kept {run.split_seed})")
    if ignored and env_rank() == 0:
        print(f"note: --resume continues {out} with its stored settings; ignored: {', '.join(ignored)}",
              file=sys.stderr)
