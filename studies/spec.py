"""Study specs: load a TOML file, validate it, resolve its defaults (STUDY_PROTOCOL.md §2.1, Rule 4).

Spyra & Dzwinel, arXiv 2511.01061 (revised), found three asymmetries in the reference study:
per-arm stopping rules, a pruner and a smaller budget for backprop only, and a TPE sampler seeded
with the global seed. A spec cannot express any of them: the budget (``trials``, ``epochs``),
the stopping rule (``patience``, ``stop_metric``), the pruner and the seeds live in ``[study]``
only, and the per-arm keys that would set them are rejected. Sampler seeds are never a spec
value; the runner derives them from the Optuna study name. Every error is one line naming the
file and the key, raised before any data is loaded.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localearn.arch import parse_arch
from localearn.data import canonical_dataset, dataset_kind
from localearn.errors import ConfigError, LocalearnError
from localearn.models.localize import arm_arch
from localearn.registry import canonical_name, get_algorithm
from localearn.run import check_options

PROTOCOLS = ("own_convergence", "matched_passes")
STOP_METRICS = ("auto", "val_loss", "val_acc")
PRUNERS = ("none", "median", "hyperband")
BASELINES = {"image": "backprop", "graph": "backprop_gnn"}
#: per-arm keys that would give one arm its own budget or rule (§2.1): always rejected.
RULE_KEYS = ("trials", "epochs", "patience", "pruner", "stop_metric", "sampler", "seed", "seeds",
             "min_delta", "restore_best", "protocol")
#: TrainConfig values an arm may fix (and a search space may tune).
FIXED_KEYS = ("optimizer", "lr", "weight_decay", "batch_size", "momentum")
_STUDY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "dataset": (str,), "datasets": (list,), "data_dir": (str,), "dataset_options": (dict,),
    "trials": (int,), "epochs": (int,), "patience": (int,), "seeds": (list,), "protocol": (str,),
    "stop_metric": (str,), "pruner": (str,), "batch_size": (int,), "device": (str,), "restore_best": (bool,),
    "energy": (bool,), "country": (str,), "idle_seconds": (int, float),
}
_ARM_TYPES: dict[str, tuple[type, ...]] = {
    "algo": (str,), "name": (str,), "arch": (str,), "schedule": (str,), "options": (dict,), "model": (str,),
    "fixed": (dict,), "search_space": (dict,), "blocks": (int, str, list), "balance": (str,), "model_options": (dict,),
}
_RANGE_KEYS = {"low", "high", "log", "type", "step", "choices"}


@dataclass
class Arm:
    """One arm of a comparison on one dataset."""

    name: str
    algo: str
    dataset: str
    arch: str
    schedule: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    is_baseline: bool = False
    baseline: str | None = None  # the key of the backprop arm it is compared with

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"

    def learner_options(self) -> dict[str, Any]:
        """Options for ``build_learner``: the arm's options plus its arch and schedule."""
        opts = {**self.options, "arch": self.arch}
        if self.schedule is not None:
            opts["schedule"] = self.schedule
        return opts


@dataclass
class StudySpec:
    """A validated study: one budget, one stopping rule and one pruner for every arm."""

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
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def arm(self, key: str) -> Arm:
        return next(a for a in self.arms if a.key == key)


def _fail(where: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {problem}")


def _typed(where: str, table: dict[str, Any], types: dict[str, tuple[type, ...]], prefix: str) -> None:
    for key, value in table.items():
        if key not in types:
            raise _fail(where, f"{prefix}{key}", f"unknown key; valid: {', '.join(types)}")
        ok = isinstance(value, types[key]) and not (isinstance(value, bool) and bool not in types[key])
        if not ok:
            want = " or ".join(t.__name__ for t in types[key])
            raise _fail(where, f"{prefix}{key}", f"expected {want}, got {value!r}")


def _check_range(where: str, key: str, rng: Any) -> None:
    if not isinstance(rng, dict):
        raise _fail(where, key, f"expected a table such as {{ low = 1e-4, high = 1e-1, log = true }}, got {rng!r}")
    bad = sorted(set(rng) - _RANGE_KEYS)
    if bad:
        raise _fail(where, f"{key}.{bad[0]}", f"unknown key; valid: {', '.join(sorted(_RANGE_KEYS))}")
    if "choices" in rng:
        if not isinstance(rng["choices"], list) or not rng["choices"] or len(rng) > 1:
            raise _fail(where, key, "choices must be a non-empty list and stand alone")
        return
    if "low" not in rng or "high" not in rng:
        raise _fail(where, key, "a range needs low and high (or choices = [...])")
    kind = rng.get("type", "float")
    if kind not in ("float", "int"):
        raise _fail(where, f"{key}.type", f"must be float or int, got {kind!r}")
    lo, hi = rng["low"], rng["high"]
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (lo, hi)):
        raise _fail(where, key, f"low and high must be {kind} numbers, got {lo!r} and {hi!r}")
    if not lo < hi:
        raise _fail(where, key, f"low must be below high, got low={lo} high={hi}")
    if rng.get("log", False) and lo <= 0:
        raise _fail(where, key, f"a log range needs low > 0, got {lo}")


def _arm(where: str, i: int, raw: Any) -> dict[str, Any]:
    prefix = f"arms[{i}]."
    if not isinstance(raw, dict):
        raise _fail(where, f"arms[{i}]", "each [[arms]] entry must be a table")
    for key in raw:
        if key in RULE_KEYS:
            raise _fail(where, f"{prefix}{key}", "a per-arm budget or rule is not allowed: every arm gets the "
                        "[study] budget, stopping rule, pruner and seeds (STUDY_PROTOCOL §2.1); set it in [study]")
    _typed(where, raw, _ARM_TYPES, prefix)
    if "algo" not in raw:
        raise _fail(where, f"{prefix}algo", "required (a learner name; see `localearn algos`)")
    try:
        algo = canonical_name(raw["algo"])
    except LocalearnError as exc:
        raise _fail(where, f"{prefix}algo", str(exc)) from None
    cls = get_algorithm(algo)
    try:
        arch = arm_arch(algo, raw)  # arch, or a model with its cut settings as a model: spec
        arch = str(parse_arch(arch)) if arch is not None else None
    except LocalearnError as exc:
        raise _fail(where, f"{prefix}arch", str(exc)) from None
    schedule = raw.get("schedule")
    if schedule is not None and schedule not in cls.schedules:
        raise _fail(where, f"{prefix}schedule", f"{algo} supports {', '.join(cls.schedules)}, not {schedule!r}")
    options = dict(raw.get("options", {}))
    try:
        check_options(algo, {**options, **({"arch": arch} if arch else {})})
    except LocalearnError as exc:
        raise _fail(where, f"{prefix}options", str(exc)) from None
    fixed = dict(raw.get("fixed", {}))
    for key, value in fixed.items():
        if key not in FIXED_KEYS:
            raise _fail(where, f"{prefix}fixed.{key}", f"not a fixable training value; valid: {', '.join(FIXED_KEYS)}")
        if key == "optimizer" and value not in ("adam", "adamw", "sgd"):
            raise _fail(where, f"{prefix}fixed.optimizer", f"must be adam, adamw or sgd, got {value!r}")
        if key != "optimizer" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise _fail(where, f"{prefix}fixed.{key}", f"must be a non-negative number, got {value!r}")
    space = dict(raw.get("search_space", {}))
    for key, rng in space.items():
        if key in RULE_KEYS:
            raise _fail(where, f"{prefix}search_space.{key}", "a budget or rule cannot be tuned per arm (§2.1)")
        _check_range(where, f"{prefix}search_space.{key}", rng)
        if key not in FIXED_KEYS:
            try:
                check_options(algo, {key: (rng.get("choices") or [rng["low"]])[0]})
            except LocalearnError as exc:
                raise _fail(where, f"{prefix}search_space.{key}", str(exc)) from None
    if "/" in raw.get("name", "") or raw.get("name", "x").strip() == "":
        raise _fail(where, f"{prefix}name", f"must be non-empty and without '/', got {raw['name']!r}")
    return {"name": raw.get("name") or algo, "algo": algo, "arch": arch, "schedule": schedule,
            "options": options, "fixed": fixed, "search_space": space}


def _seeds(where: str, seeds: list[Any]) -> list[int]:
    if len(seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise _fail(where, "study.seeds", f"needs >= 2 integer seeds (paired final runs), got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(where, "study.seeds", f"seeds must be distinct, got {seeds!r}")
    return list(seeds)


def _datasets(where: str, study: dict[str, Any]) -> list[str]:
    if ("dataset" in study) == ("datasets" in study):
        raise _fail(where, "study.dataset", "give exactly one of dataset = \"...\" or datasets = [...]")
    names = [study["dataset"]] if "dataset" in study else study["datasets"]
    if not names or not all(isinstance(n, str) for n in names):
        raise _fail(where, "study.datasets", f"expected a non-empty list of names, got {names!r}")
    try:
        return [canonical_dataset(n) for n in names]
    except LocalearnError as exc:
        raise _fail(where, "study.dataset", str(exc)) from None


def _expand(where: str, raws: list[dict[str, Any]], datasets: list[str]) -> list[Arm]:
    """One arm per (dataset, arm); auto-add a same-arch backprop arm and pair every local arm."""
    names = [r["name"] for r in raws]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise _fail(where, "arms.name", f"two arms are named {dup!r}; give each a unique name = \"...\"")
    arms: list[Arm] = []
    for ds in datasets:
        kind = dataset_kind(ds)
        bp_algo = BASELINES[kind]
        bps: dict[str, Arm] = {}
        given: list[Arm] = []
        locals_: list[Arm] = []
        for i, r in enumerate(raws):
            cls = get_algorithm(r["algo"])
            if cls.supports_graphs != (kind == "graph"):
                want = "graph" if cls.supports_graphs else "image"
                raise _fail(where, f"arms[{i}].algo", f"{r['algo']} takes {want} data, but dataset {ds!r} is {kind}")
            arm = Arm(dataset=ds, **{**r, "arch": r["arch"] or str(parse_arch(cls.default_arch))})
            if r["algo"] == bp_algo:
                arm.is_baseline = True
                given.append(arm)
                bps.setdefault(arm.arch, arm)
            else:
                locals_.append(arm)
        archs = sorted({a.arch for a in locals_} - set(bps))
        for arch in archs:
            name = "backprop" if len(archs) == 1 and not bps else f"backprop@{arch}"
            if name in names:
                raise _fail(where, "arms.name", f"{name!r} is reserved for the auto-added backprop arm")
            bps[arch] = Arm(name=name, algo=bp_algo, dataset=ds, arch=arch, is_baseline=True)
            given.append(bps[arch])
        for arm in locals_:
            arm.baseline = bps[arm.arch].key
        arms += given + locals_
    return arms


def load_spec(source: str | Path | dict[str, Any]) -> StudySpec:
    """Parse and validate a study spec (a TOML path or an already-parsed dict)."""
    if isinstance(source, dict):
        where, raw, base = "<spec>", source, Path.cwd()
    else:
        path = Path(source)
        where, base = str(path), path.resolve().parent
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such study spec") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in ("study", "arms"):
            raise _fail(where, key, "unknown table; a spec has [study] and [[arms]]")
    study = raw.get("study")
    if not isinstance(study, dict):
        raise _fail(where, "study", "a [study] table is required")
    _typed(where, study, _STUDY_TYPES, "study.")
    if not study.get("name", "").strip() or "/" in study.get("name", "/"):
        raise _fail(where, "study.name", "required, a non-empty name without '/'")
    for key in ("trials", "epochs", "patience", "batch_size"):
        if key in study and study[key] < 1:
            raise _fail(where, f"study.{key}", f"must be >= 1, got {study[key]}")
    for key, valid in (("protocol", PROTOCOLS), ("stop_metric", STOP_METRICS), ("pruner", PRUNERS)):
        if key in study and study[key] not in valid:
            raise _fail(where, f"study.{key}", f"must be one of {', '.join(valid)}, got {study[key]!r}")
    if study.get("device", "auto") not in ("auto", "cpu", "cuda"):
        raise _fail(where, "study.device", f"must be auto, cpu or cuda, got {study['device']!r}")
    if study.get("idle_seconds", 0) < 0:
        raise _fail(where, "study.idle_seconds", "must be >= 0")
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise _fail(where, "arms", "at least one [[arms]] table is required")
    datasets = _datasets(where, study)
    arms = _expand(where, [_arm(where, i, a) for i, a in enumerate(arms_raw)], datasets)
    data_dir = study.get("data_dir")
    if data_dir is not None and not Path(data_dir).is_absolute():
        data_dir = str(base / data_dir) if (base / data_dir).exists() else str(Path(data_dir).resolve())
    plain = {k: study[k] for k in ("trials", "epochs", "patience", "protocol", "stop_metric", "pruner", "batch_size",
                                   "device", "restore_best", "energy", "idle_seconds", "dataset_options") if k in study}
    return StudySpec(name=study["name"], datasets=datasets, arms=arms, data_dir=data_dir, source=where,
                     seeds=_seeds(where, study["seeds"]) if "seeds" in study else [0, 1, 2, 3, 4],
                     country=study.get("country"), **plain)
