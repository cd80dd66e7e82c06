"""A study's arms: validation of each ``[[arms]]`` table, and the same-trunk backprop arms added to it.

docs/concepts/protocol.md#asymmetries and Rule 4: the keys that would give one arm its own budget, stopping rule,
pruner, seeds or sampler are rejected (:data:`RULE_KEYS`), and so are those the study sets once for
every arm (:data:`STUDY_ONLY`: the task, whose metric is the objective, and the precision; issue
#20: "a study's arms share the precision by construction"). An arm is searched one of three ways
(``search``): ``tpe`` over its learner's space (with ``search_space`` overrides), ``grid`` over the
points of ``grid`` (Optuna's GridSampler semantics: every combination once), or ``fixed``: one
configuration, the recipe's with the arm's ``fixed`` values. Run settings an arm may set are
:data:`localearn.runspec.SETTINGS` (``arch``, ``schedule``), so a new setting lands as data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from localearn.arch import parse_arch
from localearn.config import TrainConfig
from localearn.data import dataset_kind
from localearn.errors import ConfigError, LocalearnError
from localearn.models.localize import arm_arch
from localearn.recipes import TRAIN_KEYS
from localearn.registry import canonical_name, get_algorithm
from localearn.rundir import field_types
from localearn.runspec import SETTINGS, check_options

BASELINES = {"image": "backprop", "graph": "backprop_gnn"}
#: per-arm keys that would give one arm its own budget or rule (docs/concepts/protocol.md#asymmetries): always rejected.
RULE_KEYS = ("trials", "epochs", "patience", "pruner", "stop_metric", "sampler", "seed", "seeds",
             "min_delta", "restore_best", "protocol")
#: set once in [study] for every arm: never an arm's own, a fixed value or a searched one.
STUDY_ONLY = ("precision", "task")
#: TrainConfig values an arm may fix, put on a grid or search (the recipe keys that are no rule).
TRAIN_VALUES = tuple(k for k in TRAIN_KEYS if k not in RULE_KEYS)
SEARCHES = ("tpe", "grid", "fixed")
ARM_SETTINGS = tuple(k for k in SETTINGS if k not in STUDY_ONLY)
ARM_TYPES: dict[str, tuple[type, ...]] = {
    "algo": (str,), "name": (str,), "options": (dict,), "fixed": (dict,), "search": (str,),
    "search_space": (dict,), "grid": (dict,), **{k: SETTINGS[k] for k in ARM_SETTINGS},
    # a model instead of an arch (issue #19), turned into a model: spec by localize.arm_arch
    "model": (str,), "blocks": (int, str, list), "balance": (str,), "model_options": (dict,)}
_RANGE_KEYS = {"low", "high", "log", "type", "step", "choices"}


@dataclass
class Arm:
    """One arm of a comparison on one dataset."""

    name: str
    algo: str
    dataset: str
    settings: dict[str, Any] = field(default_factory=dict)  # arch (always resolved), schedule, ...
    options: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    search: str = "tpe"
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    is_baseline: bool = False
    baseline: str | None = None  # the key of the backprop arm it is compared with

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"

    @property
    def arch(self) -> str:
        return str(self.settings["arch"])

    def learner_options(self) -> dict[str, Any]:
        """The arm's options and settings as the learner takes them (``arch``, ``schedule``)."""
        return {**self.options, **self.settings}

    def points(self) -> list[dict[str, Any]]:
        """The configurations this arm's slots run: every grid combination (one, empty, when fixed)."""
        if self.search == "grid":
            return [dict(zip(self.grid, values, strict=True)) for values in itertools.product(*self.grid.values())]
        return [{}]


def fail(where: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {problem}")


def typed(where: str, table: dict[str, Any], types: dict[str, tuple[type, ...]], prefix: str) -> None:
    for key, value in table.items():
        if key not in types:
            raise fail(where, f"{prefix}{key}", f"unknown key; valid: {', '.join(types)}")
        if not isinstance(value, types[key]) or (isinstance(value, bool) and bool not in types[key]):
            want = " or ".join(t.__name__ for t in types[key])
            raise fail(where, f"{prefix}{key}", f"expected {want}, got {value!r}")


def folder_name(where: str, key: str, name: str) -> None:
    """Study and arm names are folders of the study directory: one plain path component each."""
    if name.strip() in ("", ".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise fail(where, key, f"must be a plain name, one folder without '/' (not empty, '.' or '..'), got {name!r}")


def _not_per_arm(where: str, key: str, name: str) -> None:
    if name in RULE_KEYS:
        raise fail(where, key, "a per-arm budget or rule is not allowed: every arm gets the [study] budget, "
                   "stopping rule, pruner and seeds (docs/concepts/protocol.md#asymmetries); set it in [study]")
    if name in STUDY_ONLY:
        raise fail(where, key, f"the {name} is the study's, the same for every arm; set study.{name}")


def _value(where: str, key: str, algo: str, name: str, value: Any) -> None:
    """One value an arm fixes or puts on a grid: a TrainConfig value of its type, or a learner option."""
    if name not in TRAIN_VALUES:
        try:
            check_options(algo, {name: value})
        except LocalearnError as exc:
            raise fail(where, key, str(exc)) from None
        return
    kinds = field_types()[name]
    numeric = float in kinds and isinstance(value, int) and not isinstance(value, bool)
    if not (numeric or (isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)))):
        raise fail(where, key, f"must be a {' or '.join(t.__name__ for t in kinds)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not (value >= 0 and math.isfinite(value)):
        raise fail(where, key, f"must be a non-negative number, got {value!r}")
    try:
        TrainConfig(**{name: value}).validate()
    except ConfigError as exc:
        raise fail(where, key, str(exc)) from None


def _check_range(where: str, key: str, rng: Any) -> None:
    if not isinstance(rng, dict):
        raise fail(where, key, f"expected a table such as {{ low = 1e-4, high = 1e-1, log = true }}, got {rng!r}")
    bad = sorted(set(rng) - _RANGE_KEYS)
    if bad:
        raise fail(where, f"{key}.{bad[0]}", f"unknown key; valid: {', '.join(sorted(_RANGE_KEYS))}")
    if "choices" in rng:
        if not isinstance(rng["choices"], list) or not rng["choices"] or len(rng) > 1:
            raise fail(where, key, "choices must be a non-empty list and stand alone")
        return
    if "low" not in rng or "high" not in rng:
        raise fail(where, key, "a range needs low and high (or choices = [...])")
    kind = rng.get("type", "float")
    if kind not in ("float", "int"):
        raise fail(where, f"{key}.type", f"must be float or int, got {kind!r}")
    lo, hi = rng["low"], rng["high"]
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (lo, hi)):
        raise fail(where, key, f"low and high must be {kind} numbers, got {lo!r} and {hi!r}")
    if not lo < hi:
        raise fail(where, key, f"low must be below high, got low={lo} high={hi}")
    if rng.get("log", False) and lo <= 0:
        raise fail(where, key, f"a log range needs low > 0, got {lo}")


def _search(where: str, prefix: str, raw: dict[str, Any]) -> str:
    search = raw.get("search", "grid" if "grid" in raw else "tpe")
    if search not in SEARCHES:
        raise fail(where, f"{prefix}search", f"must be one of {', '.join(SEARCHES)}, got {search!r}")
    if ("grid" in raw) != (search == "grid"):
        raise fail(where, f"{prefix}grid", "a grid arm (search = \"grid\") needs a grid table, and only it takes one")
    if search == "fixed" and raw.get("search_space"):
        raise fail(where, f"{prefix}search_space", "a fixed arm searches nothing; put its values in fixed")
    if search == "grid" and raw.get("search_space"):
        raise fail(where, f"{prefix}search_space", "a grid arm runs its grid points only; put ranges in the grid")
    return str(search)


def check_arm(where: str, i: int, raw: Any) -> dict[str, Any]:
    """One ``[[arms]]`` table, validated; returns the fields of its :class:`Arm` (no dataset yet)."""
    prefix = f"arms[{i}]."
    if not isinstance(raw, dict):
        raise fail(where, f"arms[{i}]", "each [[arms]] entry must be a table")
    for key in raw:
        _not_per_arm(where, f"{prefix}{key}", key)
    typed(where, raw, ARM_TYPES, prefix)
    if "algo" not in raw:
        raise fail(where, f"{prefix}algo", "required (a learner name; see `localearn algos`)")
    try:
        algo = canonical_name(raw["algo"])
    except LocalearnError as exc:
        raise fail(where, f"{prefix}algo", str(exc)) from None
    cls = get_algorithm(algo)
    settings = {k: raw[k] for k in ARM_SETTINGS if k in raw}
    try:
        arch = arm_arch(algo, raw)  # arch, or a model with its cut settings as a model: spec
        if arch is not None:
            settings["arch"] = str(parse_arch(arch))
    except LocalearnError as exc:
        raise fail(where, f"{prefix}arch", str(exc)) from None
    if "schedule" in settings and settings["schedule"] not in cls.schedules:
        raise fail(where, f"{prefix}schedule",
                   f"{algo} supports {', '.join(cls.schedules)}, not {settings['schedule']!r}")
    options = dict(raw.get("options", {}))
    for key in options:
        _not_per_arm(where, f"{prefix}options.{key}", key)
    try:
        check_options(algo, {**options, **settings})
    except LocalearnError as exc:
        raise fail(where, f"{prefix}options", str(exc)) from None
    search = _search(where, prefix, raw)
    fixed = dict(raw.get("fixed", {}))
    for key, value in fixed.items():
        _not_per_arm(where, f"{prefix}fixed.{key}", key)
        if key not in TRAIN_VALUES:
            raise fail(where, f"{prefix}fixed.{key}", f"not a fixable training value; valid: {', '.join(TRAIN_VALUES)}")
        _value(where, f"{prefix}fixed.{key}", algo, key, value)
    space = dict(raw.get("search_space", {}))
    for key, rng in space.items():
        _not_per_arm(where, f"{prefix}search_space.{key}", key)
        _check_range(where, f"{prefix}search_space.{key}", rng)
        if key not in TRAIN_VALUES:
            _value(where, f"{prefix}search_space.{key}", algo, key, (rng.get("choices") or [rng["low"]])[0])
    grid = dict(raw.get("grid", {}))
    for key, values in grid.items():
        _not_per_arm(where, f"{prefix}grid.{key}", key)
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise fail(where, f"{prefix}grid.{key}", f"expected a non-empty list of distinct values, got {values!r}")
        for value in values:
            if not isinstance(value, (str, int, float, bool)):
                raise fail(where, f"{prefix}grid.{key}", f"grid values are plain numbers, strings or booleans, "
                           f"got {value!r}")
            _value(where, f"{prefix}grid.{key}", algo, key, value)
    if "name" in raw:
        folder_name(where, f"{prefix}name", raw["name"])
    return {"name": raw.get("name") or algo, "algo": algo, "settings": settings, "options": options,
            "fixed": fixed, "search": search, "search_space": space, "grid": grid}


def expand(where: str, raws: list[dict[str, Any]], datasets: list[str], trials: int) -> list[Arm]:
    """One arm per (dataset, arm); auto-add a same-arch backprop arm and pair every local arm.

    An added backprop arm searches its learner's space with TPE, or is fixed at its recipe when
    the study's budget is one trial (a single TPE draw would be a random configuration)."""
    names = [r["name"] for r in raws]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise fail(where, "arms.name", f"two arms are named {dup!r}; give each a unique name = \"...\"")
    arms: list[Arm] = []
    for ds in datasets:
        kind = dataset_kind(ds)
        bp_algo = BASELINES[kind]
        bps: dict[str, Arm] = {}
        given, locals_ = [], []
        for i, r in enumerate(raws):
            cls = get_algorithm(r["algo"])
            if cls.supports_graphs != (kind == "graph"):
                want = "graph" if cls.supports_graphs else "image"
                raise fail(where, f"arms[{i}].algo", f"{r['algo']} takes {want} data, but dataset {ds!r} is {kind}")
            settings = {**r["settings"], "arch": r["settings"].get("arch") or str(parse_arch(cls.default_arch))}
            arm = Arm(dataset=ds, **{**r, "settings": settings})
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
                raise fail(where, "arms.name", f"{name!r} is reserved for the auto-added backprop arm")
            bps[arch] = Arm(name=name, algo=bp_algo, dataset=ds, settings={"arch": arch}, is_baseline=True,
                            search="fixed" if trials == 1 else "tpe")
            given.append(bps[arch])
        for arm in locals_:
            arm.baseline = bps[arm.arch].key
        arms += given + locals_
    return arms
