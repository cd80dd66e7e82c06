"""Study specs: load a TOML file, validate it, resolve its defaults (docs/concepts/protocol.md#asymmetries, Rule 4).

Spyra & Dzwinel, arXiv 2511.01061 (revised), found three asymmetries in the reference study:
per-arm stopping rules, a pruner and a smaller budget for backprop only, and a TPE sampler seeded
with the global seed. A spec cannot express any of them: the budget (``trials``, ``epochs``),
the stopping rule (``patience``, ``stop_metric``), the pruner and the seeds live in ``[study]``
only, and the per-arm keys that would set them are rejected (:mod:`localearn.studies.arms`).
Every arm runs ``trials`` configurations: a grid arm has exactly that many points, a fixed arm
is one trial (so a study of fixed arms has ``trials = 1``). The ``task`` (default
classification) makes its metric every arm's objective, in its direction (accuracy and ROC-AUC
up, MSE down); ``precision`` (default fp32) is every arm's. ``margin`` is the equivalence margin
of the verdicts, in the units the report shows the metric in (pp for accuracy and ROC-AUC, the
protocol's 0.25 by default; MSE has no protocol margin, so an MSE study states its own).
Sampler seeds are never a spec value; the runner derives them from the Optuna study name. Every
error is one line naming the file and the key, raised before any data is loaded.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localearn.studies.arms import Arm, check_arm, expand, fail, folder_name, typed

from localearn.data import canonical_dataset
from localearn.errors import ConfigError, LocalearnError
from localearn.runspec import check_task
from localearn.tasks import TASKS
from localearn.update import PRECISIONS

PROTOCOLS = ("own_convergence", "matched_passes")
STOP_METRICS = ("auto", "val_loss", "val_acc")
PRUNERS = ("none", "median", "hyperband")
#: the equivalence margin per metric, in report units (pp); None: the spec must give one
MARGINS: dict[str, float | None] = {"accuracy": 0.25, "roc_auc": 0.25, "mse": None}
_STUDY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "dataset": (str,), "datasets": (list,), "data_dir": (str,), "dataset_options": (dict,),
    "trials": (int,), "epochs": (int,), "patience": (int,), "seeds": (list,), "protocol": (str,),
    "stop_metric": (str,), "pruner": (str,), "batch_size": (int,), "device": (str,), "restore_best": (bool,),
    "energy": (bool,), "country": (str,), "idle_seconds": (int, float), "task": (str,), "precision": (str,),
    "margin": (int, float),
}


@dataclass
class StudySpec:
    """A validated study: one budget, stopping rule, pruner, objective and precision for every arm."""

    name: str
    datasets: list[str]
    arms: list[Arm]
    trials: int = 50
    epochs: int = 20
    patience: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    protocol: str = "own_convergence"
    stop_metric: str = "auto"
    pruner: str = "none"
    batch_size: int | None = None
    device: str = "auto"
    restore_best: bool = True
    energy: bool = False
    country: str | None = None
    idle_seconds: float = 10.0
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    precision: str = "fp32"
    margin: float = 0.25
    source: str = "<dict>"

    @property
    def metric(self) -> str:
        """The objective of every arm: the task's metric (``accuracy``, ``roc_auc``, ``mse``)."""
        return TASKS[self.task].metric

    @property
    def direction(self) -> str:
        """``maximize`` or ``minimize``: the metric's direction."""
        return "maximize" if TASKS[self.task].higher_is_better else "minimize"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def arm(self, key: str) -> Arm:
        return next(a for a in self.arms if a.key == key)


def _seeds(where: str, seeds: list[Any]) -> list[int]:
    if len(seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise fail(where, "study.seeds", f"needs >= 2 integer seeds (paired final runs), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise fail(where, "study.seeds", f"seeds must be distinct, got {seeds!r}")
    return list(seeds)


def _datasets(where: str, study: dict[str, Any]) -> list[str]:
    if ("dataset" in study) == ("datasets" in study):
        raise fail(where, "study.dataset", "give exactly one of dataset = \"...\" or datasets = [...]")
    names = [study["dataset"]] if "dataset" in study else study["datasets"]
    if not names or not all(isinstance(n, str) for n in names):
        raise fail(where, "study.datasets", f"expected a non-empty list of names, got {names!r}")
    try:
        return [canonical_dataset(n) for n in names]
    except LocalearnError as exc:
        raise fail(where, "study.dataset", str(exc)) from None


def _trials(where: str, study: dict[str, Any], raws: list[dict[str, Any]]) -> int:
    """The one budget: ``study.trials``; without it, a grid's size, 1 for fixed arms, else 50.
    Every grid arm must have exactly that many points and a fixed arm needs a budget of one."""
    sizes = {i: math.prod(len(v) for v in r["grid"].values()) for i, r in enumerate(raws) if r["search"] == "grid"}
    fixed = [i for i, r in enumerate(raws) if r["search"] == "fixed"]
    default = next(iter(sizes.values())) if sizes else 1 if len(fixed) == len(raws) else 50
    trials = int(study.get("trials", default))
    for i, size in sizes.items():
        if size != trials:
            raise fail(where, f"arms[{i}].grid", f"{size} points, but every arm gets study.trials = {trials} trials "
                       "(docs/concepts/protocol.md#rule-4: equal budgets); make each grid that size")
    if fixed and trials != 1:
        raise fail(where, f"arms[{fixed[0]}].search", f"a fixed arm runs one trial, but every arm gets study.trials = "
                   f"{trials} (docs/concepts/protocol.md#rule-4: equal budgets); fix every arm (trials = 1) "
                   "or search this one")
    return trials


def _objective(where: str, study: dict[str, Any], arms: list[Arm]) -> tuple[str, str, float]:
    """The task (every arm's learner must train it), the precision and the verdicts' margin."""
    task, precision = study.get("task", "classification"), study.get("precision", "fp32")
    if task not in TASKS:
        raise fail(where, "study.task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    if precision not in PRECISIONS:
        raise fail(where, "study.precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if task != "classification":
        for arm in arms:
            try:
                check_task(arm.algo, task)
            except LocalearnError as exc:
                raise fail(where, "study.task", f"arm {arm.name}: {exc}") from None
    margin = study.get("margin", MARGINS[TASKS[task].metric])
    if margin is None:
        raise fail(where, "study.margin", f"required for task {task}: {TASKS[task].metric} has no protocol "
                   "equivalence margin, so the spec states one (in the metric's units)")
    if not (margin > 0 and math.isfinite(margin)):
        raise fail(where, "study.margin", f"must be a positive number, got {margin!r}")
    return task, precision, float(margin)


def load_spec(source: str | Path | dict[str, Any]) -> StudySpec:
    """Parse and validate a study spec (a TOML path or an already-parsed dict)."""
    if isinstance(source, dict):
        where, raw, base = "<spec>", source, Path.cwd()
    else:
        path = Path(source)
        where, base = str(path), path.resolve().parent
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such study spec") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a study spec is a TOML file") from None
        except OSError as exc:  # a directory, no permission, ...
            raise ConfigError(f"{path}: cannot read the study spec ({exc.strerror or type(exc).__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in ("study", "arms"):
            raise fail(where, key, "unknown table; a spec has [study] and [[arms]]")
    study = raw.get("study")
    if not isinstance(study, dict):
        raise fail(where, "study", "a [study] table is required")
    typed(where, study, _STUDY_TYPES, "study.")
    folder_name(where, "study.name", study.get("name", ""))
    for key in ("trials", "epochs", "patience", "batch_size"):
        if key in study and study[key] < 1:
            raise fail(where, f"study.{key}", f"must be >= 1, got {study[key]}")
    for key, valid in (("protocol", PROTOCOLS), ("stop_metric", STOP_METRICS), ("pruner", PRUNERS),
                       ("device", ("auto", "cpu", "cuda"))):
        if key in study and study[key] not in valid:
            raise fail(where, f"study.{key}", f"must be one of {', '.join(valid)}, got {study[key]!r}")
    if study.get("idle_seconds", 0) < 0:
        raise fail(where, "study.idle_seconds", "must be >= 0")
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise fail(where, "arms", "at least one [[arms]] table is required")
    datasets = _datasets(where, study)
    raws = [check_arm(where, i, a) for i, a in enumerate(arms_raw)]
    trials = _trials(where, study, raws)
    arms = expand(where, raws, datasets, trials)
    task, precision, margin = _objective(where, study, arms)
    data_dir = study.get("data_dir")
    if data_dir is not None and not Path(data_dir).is_absolute():
        data_dir = str(base / data_dir) if (base / data_dir).exists() else str(Path(data_dir).resolve())
    plain = {k: study[k] for k in ("epochs", "patience", "protocol", "stop_metric", "pruner", "batch_size",
                                   "device", "restore_best", "energy", "idle_seconds", "dataset_options") if k in study}
    return StudySpec(name=study["name"], datasets=datasets, arms=arms, data_dir=data_dir, source=where,
                     seeds=_seeds(where, study["seeds"]) if "seeds" in study else [0, 1, 2, 3, 4],
                     country=study.get("country"), trials=trials, task=task, precision=precision, margin=margin,
                     **plain)
