"""Reading a run directory safely: the few plain values a checkpoint may set, and nothing else.

A run directory from elsewhere is data, never code (docs/guides/checkpoints.md#safety;
the attack of issue #23 S1: a checkpoint whose stored ``data_dir`` pointed PyG's Planetoid reader,
which unpickles its raw files, at crafted pickles beside it). So ``--resume``, ``localearn eval``
and :func:`localearn.load_run` read exactly these fields of a checkpoint's ``run`` entry, each
checked for type: ``algorithm`` and ``dataset`` (names resolved through the registries of what is
installed, never imported from the directory), ``learner_options`` and ``dataset_options`` (plain
values, checked against the constructor or loader that takes them), ``split_seed`` and ``recipe``
(a record). Paths stored there (``data_dir``) are provenance only and are never followed: data
comes from the user's ``--data-dir``, ``$LOCALEARN_DATA_DIR`` or ``./data``. A field naming code
(a module, a factory) is never read from a run directory; such a source must be named again on
the command line. The stored training config is checked against :class:`TrainConfig`'s fields.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from localearn.config import TrainConfig
from localearn.data import canonical_dataset, default_data_dir
from localearn.errors import LocalearnError
from localearn.registry import canonical_name

BUNDLED = ("digits", "karate")  # shipped inside installed packages: no data folder is read
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class StoredRun:
    """What a checkpoint may decide about the run it continues or evaluates."""

    algorithm: str
    dataset: str
    learner_options: dict[str, Any]
    dataset_options: dict[str, Any]
    split_seed: int
    recipe: dict[str, Any] | None


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _options(where: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not _plain(value):
        raise LocalearnError(f"{where}: run.{key} must be a table of plain values, got {type(value).__name__}")
    return dict(value)


def stored_run(ckpt: dict[str, Any], where: str | Path) -> StoredRun:
    """The checked fields of ``ckpt["run"]`` (see the module docstring); one clear error otherwise."""
    where = str(where)
    run = ckpt.get("run")
    if not isinstance(run, dict) or "algorithm" not in run:
        raise LocalearnError(f"{where} does not record which learner produced it")
    for key in ("algorithm", "dataset"):
        if not isinstance(run.get(key), str):
            raise LocalearnError(f"{where}: run.{key} must be a name, got {run.get(key)!r:.60}")
    seed = run.get("split_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LocalearnError(f"{where}: run.split_seed must be an integer, got {seed!r:.60}")
    recipe = run.get("recipe")
    return StoredRun(
        algorithm=canonical_name(run["algorithm"]), dataset=canonical_dataset(run["dataset"]),
        learner_options=_options(where, "learner_options", run.get("learner_options")),
        dataset_options=_options(where, "dataset_options", run.get("dataset_options")),
        split_seed=seed, recipe=recipe if isinstance(recipe, dict) and _plain(recipe) else None)


def field_types() -> dict[str, tuple[type, ...]]:
    """Each :class:`TrainConfig` field's accepted types (a study spec's values are checked too)."""
    out: dict[str, tuple[type, ...]] = {}
    for f in fields(TrainConfig):
        text = str(f.type)
        kinds = tuple(t for name, t in (("bool", bool), ("int", int), ("float", float), ("str", str))
                      if re.search(rf"\b{name}\b", text))
        out[f.name] = kinds + ((type(None),) if "None" in text else ())
    return out


def stored_config(ckpt: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """The checkpoint's training config, every key a :class:`TrainConfig` field of its type."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise LocalearnError(f"{where}: the checkpoint holds no training config")
    types = field_types()
    for key, value in config.items():
        if key not in types:
            raise LocalearnError(f"{where}: unknown training option {key!r} in the checkpoint")
        want = types[key]
        numeric = float in want and isinstance(value, int) and not isinstance(value, bool)
        if not (numeric or (isinstance(value, want) and (bool in want or not isinstance(value, bool)))):
            raise LocalearnError(f"{where}: training option {key}={value!r:.60} in the checkpoint is not a "
                                 f"{' or '.join(t.__name__ for t in want)}")
    return dict(config)


def data_folder(data_dir: str | Path | None, run_dir: str | Path | None = None,
                dataset: str | None = None) -> tuple[Path, str]:
    """The user's data folder and where that choice came from (never a run directory).

    A folder the user did not name (``$LOCALEARN_DATA_DIR`` or ``./data``, relative to where the
    command runs) that lies inside ``run_dir`` is refused: started from inside a crafted run
    directory, the default would read the directory's own files as data (bundled datasets
    read no folder, so they pass).
    """
    if data_dir is not None:
        return Path(data_dir), "--data-dir"
    source = "$LOCALEARN_DATA_DIR" if os.environ.get("LOCALEARN_DATA_DIR") else "the default ./data"
    folder = default_data_dir()
    if run_dir is not None and dataset not in BUNDLED:
        run = Path(run_dir).resolve()
        run = run.parent if run.is_file() else run
        if folder.resolve().is_relative_to(run):
            raise LocalearnError(f"the data folder {folder} ({source}) lies inside the run directory {run}, whose "
                                 "files are never read as data; name the data folder with --data-dir")
    return folder, source


def describe_data(dataset: str, data_dir: str | Path | None) -> str:
    """One line saying which data a run was evaluated on."""
    if dataset in BUNDLED:
        return f"data: {dataset} is bundled (no data folder read)"
    folder, source = data_folder(data_dir)
    return f"data: {dataset} from {folder.resolve()} ({source})"


def state_dict_problem(exc: RuntimeError) -> str:
    """torch's many-line ``load_state_dict`` error as one line: its first problem and a count."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    problems = [ln for ln in lines[1:] if not ln.startswith("Error(s)")] or lines or [type(exc).__name__]
    first = re.sub(r"\s+", " ", problems[0])[:240]
    return first + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def ignored_settings(given: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """``--flag value (stored X)`` for each value given on resume that differs from the stored one."""
    out = []
    for key, value in given.items():
        if value is None or key in ("device", "progress") or stored.get(key, value) == value:
            continue
        out.append(f"{key}={value!r} (kept {stored.get(key)!r})")
    return out
