"""One-call training: build data and learner from names, train, and rebuild a run from disk.

``fit`` is what the CLI's ``train`` runs and what a script calls for a quick experiment; the
checkpoint it writes stores the names and options needed to rebuild everything (``load_run``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from localearn.arch import parse_arch
from localearn.checkpoint import CHECKPOINT_NAME, load_checkpoint
from localearn.data import DataBundle, canonical_dataset, dataset_kind, load_dataset
from localearn.errors import ConfigError, LocalearnError
from localearn.learner import LocalLearner
from localearn.measure import Probe
from localearn.recipes import apply_recipe
from localearn.registry import canonical_name, get_algorithm
from localearn.trainer import Callback, TrainConfig, Trainer
from localearn.utils import check_kwargs, keyword_defaults, seed_everything

_LEARNER_SKIP = ("input_shape", "num_classes")


def check_options(algo: str, options: dict[str, Any]) -> None:
    """Reject learner options the learner does not take (listing the ones it does) or mistyped."""
    cls = get_algorithm(algo)
    check_kwargs(cls, options, cls.name, skip=_LEARNER_SKIP)


def check_task(algo: str, task: str) -> None:
    """A ``--task`` the learner cannot train is refused with the learners that can."""
    from localearn.registry import list_algorithms
    from localearn.tasks import get_task

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


def build_learner(algo: str, data: DataBundle, options: dict[str, Any]) -> LocalLearner:
    """Create ``algo`` for ``data``'s input shape and class count with ``options``."""
    check_options(algo, options)
    cls = get_algorithm(algo)
    return cls(input_shape=data.input_shape, num_classes=data.num_classes, **options)


def fit(
    algo: str | None = "mono_forward",
    dataset: str | None = "digits",
    *,
    arch: str | None = None,
    model: str | None = None,
    blocks: int | str | list[str] | None = None,
    balance: str | None = None,
    model_options: dict[str, Any] | None = None,
    schedule: str | None = None,
    task: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    split_seed: int = 0,
    learner_options: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    callbacks: Iterable[Callback] = (),
    probes: Iterable[Probe] = (),
    given_by: str = "argument",
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Train ``algo`` on ``dataset`` and return the run record (also ``out/run.json``).

    Args:
        algo: a registered learner name or alias.
        dataset: a registered dataset name.
        arch: architecture spec; None takes the learner's default.
        model, blocks, balance, model_options: a model instead of ``arch`` (``torchvision:NAME``,
            ``timm:NAME`` or ``package.module:factory``), cut into ``blocks`` (a count, default 4, or
            module names) balanced by ``balance``; recorded as a ``model:`` arch spec
            (:mod:`localearn.models.spec`). With ``resume``, a model named here must be the stored one,
            and a stored ``package.module:factory`` is rebuilt only when named here again.
        schedule: ``joint`` | ``greedy``; None takes the learner's default.
        task: ``classification`` | ``link`` | ``autoencoder`` (:mod:`localearn.tasks`), for learners
            that train more than one (a learner option ``task``); None: the learner's default.
        data_dir, download, split_seed: where data lives, whether to fetch it, the split seed.
        learner_options, dataset_options: passed to the learner / dataset loader.
        out: run directory (checkpoint every epoch, ``run.json`` at the end).
        resume: continue the run in ``out`` from its last checkpoint; its stored settings win.
        callbacks, probes: passed to the :class:`Trainer`.
        given_by: the source ``run.json``'s ``recipe`` records for options set here (``cli``).
        train_kwargs: :class:`TrainConfig` fields (epochs, batch_size, lr, seed, device, ...);
            None or absent takes the learner's reference recipe (``localearn recipes``).
    """
    run_stored = None
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR naming the run to continue")
        ckpt_path = _resume_file(Path(out))
        if not ckpt_path.is_file():
            raise LocalearnError(f"nothing to resume: {ckpt_path} does not exist")
        ckpt = load_checkpoint(ckpt_path)
        run = run_stored = ckpt["run"]
        if algo is not None and canonical_name(algo) != run["algorithm"]:
            raise ConfigError(f"{out} holds a {run['algorithm']} run, not {algo}")
        if dataset is not None and canonical_dataset(dataset) != run["dataset"]:
            raise ConfigError(f"{out} holds a run on {run['dataset']}, not {dataset}")
        train_kwargs = {**ckpt["config"], **{k: v for k, v in train_kwargs.items() if k in ("device", "progress")}}
        algo, dataset = run["algorithm"], run["dataset"]  # the stored run's settings win
        learner_options, dataset_options = run["learner_options"], run["dataset_options"]
        _check_model_named(learner_options, model, out)  # a run directory is data, never code
        split_seed = run["split_seed"]
        data_dir = data_dir if data_dir is not None else run.get("data_dir")
    valid_fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(train_kwargs) - valid_fields)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid_fields))}")
    name = canonical_name(algo or "mono_forward")
    graph = get_algorithm(name).supports_graphs
    dataset = canonical_dataset(dataset or ("karate" if graph else "digits"))  # both bundled
    opts = dict(learner_options or {})
    if not resume and (model is not None or blocks is not None or balance is not None or model_options):
        from localearn.models.localize import check_takes_model, model_setting

        check_takes_model(name)
        arch = model_setting(arch, model, blocks, balance, model_options)
    recipe_record = None
    if not resume:  # unset options come from the learner's reference recipe (localearn.recipes)
        train_kwargs, opts, arch, recipe_record = apply_recipe(
            name, dataset, train_kwargs, opts, arch, _recipe_defaults(name), given_by)
    config = TrainConfig(**train_kwargs)
    config.validate()
    if not resume:
        if arch is not None:
            opts["arch"] = str(parse_arch(arch))  # a bad spec fails before any data is loaded
        if schedule is not None:
            opts["schedule"] = schedule
        if task is not None:
            check_task(name, task)
            opts["task"] = task
    check_options(name, opts)
    if graph != (dataset_kind(dataset) == "graph"):
        kind = "graph" if graph else "image"
        raise ConfigError(f"{name} takes {kind} data, but dataset {dataset!r} is not {kind} data")
    data = load_dataset(dataset, data_dir, download=download, split_seed=split_seed, **(dataset_options or {}))
    seed_everything(config.seed)  # the same seed gives the same initialisation
    learner = build_learner(name, data, opts)
    run_info = {
        "algorithm": name, "dataset": dataset, "learner_options": opts,
        "learner_options_resolved": {**resolved_options(name, opts), "arch": str(learner.arch),
                                     "schedule": learner.schedule_mode},
        "dataset_options": dict(dataset_options or {}), "split_seed": split_seed,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "paper": learner.paper,
        "recipe": recipe_record if recipe_record is not None else (run_stored or {}).get("recipe"),
    }
    trainer = Trainer(learner, data, config, out_dir=out, callbacks=callbacks, probes=probes, run_info=run_info)
    if resume:
        trainer.resume(_resume_file(Path(out)))  # type: ignore[arg-type]
    return trainer.fit()


def _resume_file(out: Path) -> Path:
    """The checkpoint this process continues: ``out/checkpoint.pt``, or this rank's under torchrun
    (its previous one if a kill came between moving it aside and writing the next)."""
    from localearn.checkpoint import PREVIOUS_NAME
    from localearn.distributed import env_rank, launched

    folder = out / f"rank{env_rank()}" if launched() and (out / f"rank{env_rank()}").is_dir() else out
    latest = folder / CHECKPOINT_NAME
    return latest if latest.is_file() or not (folder / PREVIOUS_NAME).is_file() else folder / PREVIOUS_NAME


def _check_model_named(options: Any, model: str | None, where: str | Path) -> None:
    """A stored model source that names a user's code is rebuilt only when ``model`` names it again."""
    arch = options.get("arch") if isinstance(options, dict) else None
    if model is not None or (isinstance(arch, str) and arch.strip().startswith("model:")):
        from localearn.models.spec import check_named

        check_named(arch, model, str(where))


def load_run(
    path: str | Path, data_dir: str | Path | None = None, device: str = "cpu", model: str | None = None,
) -> tuple[LocalLearner, DataBundle, dict[str, Any]]:
    """Rebuild the learner (with its trained weights) and the dataset of a saved run; a
    ``--parallel`` run's directory joins its ranks' checkpoints (a pipeline's hold disjoint layers).
    A run of a ``package.module:factory`` model is rebuilt only when ``model`` names that source."""
    folder = Path(path)
    ranks = sorted(folder.glob("rank*/" + CHECKPOINT_NAME)) if not (folder / CHECKPOINT_NAME).exists() else []
    if folder.is_dir() and ranks:
        parts = [load_checkpoint(r, map_location=device) for r in ranks]
        ckpt = {**parts[0], "model": {k: v for part in parts for k, v in part["model"].items()}}
    else:
        ckpt = load_checkpoint(path, map_location=device)
    run = ckpt.get("run") or {}
    if "algorithm" not in run:
        raise LocalearnError(f"{path} does not record which learner produced it")
    _check_model_named(run.get("learner_options"), model, path)
    data = load_dataset(run["dataset"], data_dir if data_dir is not None else run.get("data_dir"),
                        split_seed=run.get("split_seed", 0), **run.get("dataset_options", {}))
    learner = build_learner(run["algorithm"], data, run.get("learner_options", {}))
    learner.load_state_dict(ckpt["model"])
    return learner.to(device).eval(), data, ckpt
