"""Reference recipes: every learner's default hyperparameters, each value with its source.

A learner declares ``recipes`` (a ClassVar beside the algorithm) mapping a key to a
:class:`Recipe`. Keys are a data family (``images``, ``graphs``) or a dataset name (``mnist``, ``cora``:
where the paper differs per dataset). :func:`resolve_recipe` merges, later winning: the
protocol's :data:`BASE` for the family, the learner's family recipe, the base recipe of the
dataset, the learner's dataset recipe. Keys of a recipe are :class:`TrainConfig`
fields (``epochs``, ``patience``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``,
``momentum``, ``stop_metric``) or learner options (``arch``, ``dropout``, ...).

:func:`localearn.run.fit` fills every training option the caller left as None from the resolved
recipe, and records each resolved value with where it came from (``recipe:<source>``, ``cli``,
``argument`` or ``default``) under ``recipe`` in ``run.json``. ``localearn recipes`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localearn.data import dataset_kind
from localearn.errors import ConfigError
from localearn.registry import canonical_name, get_algorithm, list_algorithms
from localearn.utils import keyword_defaults

# The TrainConfig fields a recipe may set, in the order they are printed.
TRAIN_KEYS = ("epochs", "patience", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "stop_metric",
              "grad_clip", "clip_scope", "grad_centralization", "loss_warmup_steps", "lr_warmup_steps",
              "lr_schedule")


@dataclass(frozen=True)
class Recipe:
    """Values of one reference setting and where they come from.

    Attributes:
        source: the reference every value cites unless ``sources`` names another.
        values: option name → value.
        sources: option name → its own reference, for values taken from elsewhere.
    """

    source: str
    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, key: str) -> str:
        return self.sources.get(key, self.source)


def recipe(source: str, sources: Mapping[str, str] | None = None, **values: Any) -> Recipe:
    """Shorthand: ``recipe("docs/learners/forward_forward.md#reference loeweX", lr=1e-3, batch_size=100)``."""
    return Recipe(source, dict(values), dict(sources or {}))


_RULE1 = "docs/concepts/protocol.md#rule-1 (cap 100 epochs per unit, patience 20)"
BASE: dict[str, Recipe] = {
    "images": recipe(_RULE1, {"batch_size": "docs/reference/setups.md#data (batch 128)"},
                     epochs=100, patience=20, batch_size=128),
    "graphs": recipe(_RULE1, epochs=100, patience=20),
    # The bundled quick-start set: seconds on a laptop, not a paper's benchmark.
    "digits": recipe("localearn quick start (bundled digits: 20 epochs per unit)", epochs=20),
}


def family_of(dataset: str) -> str:
    """``images`` or ``graphs`` for a registered dataset name."""
    return "graphs" if dataset_kind(dataset) == "graph" else "images"


def _layers(algo: str, dataset: str) -> list[Recipe]:
    own: Mapping[str, Recipe] = getattr(get_algorithm(algo), "recipes", {}) or {}
    family = family_of(dataset)
    keys = [(BASE, family), (own, family), (BASE, dataset), (own, dataset)]
    return [table[key] for table, key in keys if key in table]


def resolve_recipe(algo: str, dataset: str) -> dict[str, dict[str, Any]]:
    """The recipe of ``algo`` on ``dataset``: ``{key: {"value": v, "source": "recipe:<ref>"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for rec in _layers(algo, dataset):
        for key, value in rec.values.items():
            out[key] = {"value": value, "source": f"recipe:{rec.source_of(key)}"}
    return out


def apply_recipe(
    algo: str, dataset: str, train_kwargs: dict[str, Any], learner_options: dict[str, Any],
    arch: str | None, defaults: Mapping[str, Any], given_by: str = "argument",
) -> tuple[dict[str, Any], dict[str, Any], str | None, dict[str, dict[str, Any]]]:
    """Fill what the caller left unset from the recipe; returns the new train options, learner
    options, arch and the record of every resolved value with its source.

    Args:
        train_kwargs: TrainConfig fields; None means "the recipe's (or the default)".
        learner_options: learner options the caller set.
        arch: the caller's architecture spec, or None.
        defaults: fallbacks for training keys no recipe sets (TrainConfig's and the learner's
            ``default_optimizer``), recorded with source ``default``.
        given_by: the source recorded for values the caller set (``cli`` from the command line).
    """
    cls = get_algorithm(algo)
    rec = resolve_recipe(algo, dataset)
    train = {k: v for k, v in train_kwargs.items() if v is not None}
    opts = dict(learner_options)
    record: dict[str, dict[str, Any]] = {}
    for key, entry in rec.items():
        if key == "arch":
            if arch is None:
                arch = str(entry["value"])
                record[key] = entry
            else:
                record[key] = {"value": arch, "source": given_by}
        elif key in TRAIN_KEYS:
            if key in train:
                record[key] = {"value": train[key], "source": given_by}
            else:
                train[key] = entry["value"]
                record[key] = entry
        elif key in opts:
            record[key] = {"value": opts[key], "source": given_by}
        else:
            opts[key] = entry["value"]
            record[key] = entry
    for key in TRAIN_KEYS:
        if key in record:
            continue
        if key in train:
            record[key] = {"value": train[key], "source": given_by}
        elif defaults.get(key) is not None:
            train[key] = defaults[key]
            record[key] = {"value": defaults[key], "source": "default"}
    if "arch" not in record:
        record["arch"] = {"value": arch if arch is not None else cls.default_arch,
                          "source": given_by if arch is not None else "default"}
    return train, opts, arch, record


def check_recipes(algo: str) -> None:
    """Raise ConfigError when a declared recipe sets a key that is neither a training option nor
    a learner option (a typo would otherwise be silently ignored)."""
    cls = get_algorithm(algo)
    options = set(keyword_defaults(cls, skip=("input_shape", "num_classes")) or {})
    for key, rec in (getattr(cls, "recipes", {}) or {}).items():
        bad = sorted(set(rec.values) - set(TRAIN_KEYS) - options)
        if bad:
            raise ConfigError(f"{algo} recipe {key!r} sets unknown option(s) {', '.join(bad)}")


def recipe_table(algo: str | None = None) -> list[dict[str, Any]]:
    """Every declared recipe (the base ones and each learner's), for ``localearn recipes``."""
    rows: list[dict[str, Any]] = []
    names = [canonical_name(algo)] if algo else list_algorithms()
    if not algo:
        rows += [{"algorithm": "(all)", "key": k, "values": dict(r.values),
                  "sources": {n: r.source_of(n) for n in r.values}} for k, r in BASE.items()]
    for name in names:
        for key, rec in (getattr(get_algorithm(name), "recipes", {}) or {}).items():
            rows.append({"algorithm": name, "key": key, "values": dict(rec.values),
                         "sources": {n: rec.source_of(n) for n in rec.values}})
    return rows


def format_recipes(rows: list[dict[str, Any]], as_json: bool = False) -> str:
    """Human-readable (one line per value) or JSON text of :func:`recipe_table` rows."""
    if as_json:
        return json.dumps(rows, indent=2)
    lines: list[str] = []
    for row in rows:
        srcs = list(row["sources"].values())
        main = max(set(srcs), key=srcs.count) if srcs else ""
        lines.append(f"{row['algorithm']} [{row['key']}]  source: {main}")
        for name, value in row["values"].items():
            other = row["sources"][name]
            lines.append(f"  {name:<14} {value!s:<12}" + (f" source: {other}" if other != main else ""))
    return "\n".join(lines)
