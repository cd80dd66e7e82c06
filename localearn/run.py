"""One-call training: build data and learner from names, train, and rebuild a run from disk.

``fit`` is what the CLI's ``train`` runs and what a script calls for a quick experiment; the
checkpoint it writes stores the names and options needed to rebuild everything (``load_run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from localearn.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint
from localearn.data import DataBundle, load_dataset
from localearn.distributed import env_rank, launched
from localearn.errors import ConfigError, LocalearnError
from localearn.learner import LocalLearner
from localearn.measure import Probe
from localearn.models.localize import check_takes_model, model_setting
from localearn.models.spec import check_named
from localearn.registry import canonical_name, get_algorithm
from localearn.rundir import data_folder, stored_run
from localearn.runspec import RunSpec, check_options, check_task, resolve_run, resolved_options, resumed_run
from localearn.snapshot import load_weights
from localearn.trainer import Callback, Trainer
from localearn.utils import seed_everything

__all__ = ["RunSpec", "build_learner", "check_options", "check_task", "execute", "fit", "load_run", "resolve_run",
           "resolved_options"]


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
    split_seed: int | None = None,
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

    The run is resolved by :func:`localearn.runspec.resolve_run` (the caller's values, then the
    learner's reference recipe, then defaults), as every study trial's and final run's is.

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
        data_dir, download, split_seed: where data lives (default ``$LOCALEARN_DATA_DIR`` or ``./data``;
            a resumed run never reads a folder stored in its directory), whether to fetch it, the
            split seed (default 0).
        learner_options, dataset_options: passed to the learner / dataset loader.
        out: run directory (checkpoint every epoch, ``run.json`` at the end).
        resume: continue the run in ``out`` from its last checkpoint; its stored settings win (a
            differing value given here is named in one ``note:`` line on stderr).
        callbacks, probes: passed to the :class:`Trainer`.
        given_by: the source ``run.json``'s ``recipe`` records for options set here (``cli``).
        train_kwargs: :class:`TrainConfig` fields (epochs, batch_size, lr, seed, device, ...);
            None or absent takes the learner's reference recipe (``localearn recipes``).
    """
    if not resume and (model is not None or blocks is not None or balance is not None or model_options):
        check_takes_model(canonical_name(algo or "mono_forward"))
        arch = model_setting(arch, model, blocks, balance, model_options)
    settings = {"arch": arch, "schedule": schedule, "task": task}
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR naming the run to continue")
        spec = resumed_run(Path(out), _resume_file(Path(out)), algo=algo, dataset=dataset, settings=settings,
                           learner_options=learner_options, dataset_options=dataset_options, split_seed=split_seed,
                           data_dir=data_dir, **train_kwargs)
        check_named(spec.learner_options.get("arch"), model, str(out))  # a run directory is data, never code
    else:
        spec = resolve_run(algo, dataset, settings=settings, learner_options=learner_options,
                           dataset_options=dataset_options, split_seed=split_seed, data_dir=data_dir,
                           download=download, given_by=given_by, **train_kwargs)
    return execute(spec, out=out, resume=resume, callbacks=callbacks, probes=probes)


def execute(spec: RunSpec, *, data: DataBundle | None = None, out: str | Path | None = None, resume: bool = False,
            callbacks: Iterable[Callback] = (), probes: Iterable[Probe] = ()) -> dict[str, Any]:
    """Train the run ``spec`` describes and return its record (also ``out/run.json``).

    Args:
        spec: from :func:`~localearn.runspec.resolve_run` (or :func:`~localearn.runspec.resumed_run`).
        data: the dataset already loaded for ``spec`` (a study worker loads each dataset once).
        out, resume: the run directory, and whether to continue it from its last checkpoint.
        callbacks, probes: passed to the :class:`Trainer`.
    """
    data = data if data is not None else spec.load_data()
    config = spec.config()
    seed_everything(config.seed)  # the same seed gives the same initialisation
    learner = build_learner(spec.algorithm, data, spec.learner_options)
    trainer = Trainer(learner, data, config, out_dir=out, callbacks=callbacks, probes=probes,
                      run_info=spec.run_info(learner))
    try:
        if resume:
            trainer.resume(_resume_file(Path(out)))  # type: ignore[arg-type]
        return trainer.fit()
    finally:  # a run that ends any other way (interrupted, an error) leaves its process group at once;
        trainer.par.close(finished=False)  # after a finished run's own close this does nothing


def _resume_file(out: Path) -> Path:
    """The checkpoint this process continues: ``out/checkpoint.pt``, or this rank's under torchrun
    (its previous one if a kill came between moving it aside and writing the next)."""
    folder = out / f"rank{env_rank()}" if launched() and (out / f"rank{env_rank()}").is_dir() else out
    latest = folder / CHECKPOINT_NAME
    return latest if latest.is_file() or not (folder / PREVIOUS_NAME).is_file() else folder / PREVIOUS_NAME


def load_run(
    path: str | Path, data_dir: str | Path | None = None, device: str = "cpu", model: str | None = None,
) -> tuple[LocalLearner, DataBundle, dict[str, Any]]:
    """Rebuild the learner (with its trained weights) and the dataset of a saved run; a
    ``--parallel`` run's directory joins its ranks' checkpoints (a pipeline's hold disjoint layers).
    A run of a ``package.module:factory`` model is rebuilt only when ``model`` names that source.

    The data comes from ``data_dir`` (default ``$LOCALEARN_DATA_DIR`` or ``./data``), never from a
    path stored in the run directory (see :mod:`localearn.rundir`).
    """
    folder = Path(path)
    ranks = sorted(folder.glob("rank*/" + CHECKPOINT_NAME)) if not (folder / CHECKPOINT_NAME).exists() else []
    if folder.is_dir() and ranks:
        parts = [load_checkpoint(r, map_location=device) for r in ranks]
        if not all(isinstance(p.get("model"), dict) for p in parts):
            raise LocalearnError(f"{path}: a rank's checkpoint holds no model weights")
        ckpt = {**parts[0], "model": {k: v for part in parts for k, v in part["model"].items()}}
    else:
        ckpt = load_checkpoint(path, map_location=device)
    run = stored_run(ckpt, path)
    check_named(run.learner_options.get("arch"), model, str(path))
    root = data_folder(data_dir, folder, run.dataset)[0]
    data = load_dataset(run.dataset, root, split_seed=run.split_seed, **run.dataset_options)
    learner = build_learner(run.algorithm, data, run.learner_options)
    load_weights(learner, ckpt.get("model"), path)
    return learner.to(device).eval(), data, ckpt
