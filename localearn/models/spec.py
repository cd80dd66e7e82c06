"""A model as an architecture spec: ``model:SOURCE blocks=K balance=KIND KEY=VALUE ...``.

Issue #19's "bring a model": a learner trained over a model's blocks is described by one string in
its ``arch`` option, so learner options, ``run.json`` and study specs describe it as they describe
``mlp:2x1000``, and every place that rebuilds a learner from its options (pipeline ranks, ``localearn
eval``, ``--resume``, study trials) rebuilds the same model: the learner builds it in its constructor,
after the run's seed, so one seed gives one initialisation on every rank.

Grammar: ``model:`` then the source (``torchvision:NAME``, ``timm:NAME`` or
``package.module:factory``, see :func:`~localearn.models.sources.load_model`), then space-separated
``KEY=VALUE`` pairs: ``blocks`` (a block count, or module names to cut after, comma-separated;
default 4), ``balance`` (``activations``, ``flops`` or ``params``; default activations) and any
other key as an option of the model's constructor (``stem=cifar``, ``num_layers=6``). Values read
as JSON when they parse (numbers, true/false), else as strings, as ``--opt`` values do; a value
cannot hold spaces. :func:`model_arch` writes the canonical form (options sorted).

A run directory is data, never code (issue #23 S1): :func:`check_named` refuses to rebuild a
``package.module:factory`` source read from a run directory unless the user names the same source
again (``--model``); ``torchvision:`` and ``timm:`` names are rebuilt from the installed libraries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from localearn.arch import ArchSpec
from localearn.errors import ConfigError, LocalearnError
from localearn.models.points import COSTS

PREFIX = "model:"
DEFAULT_BLOCKS = 4
SAFE_KINDS = ("torchvision", "timm")  # rebuilt from installed libraries, never from a user's module
OBJECT = "object"  # the source kind of a model passed to localize() as a Python object


@dataclass(frozen=True)
class ModelSpec(ArchSpec):
    """A parsed ``model:`` spec (see the module docstring); ``module`` holds a model object given to
    :func:`~localearn.models.localize` (such a spec names it ``object:ClassName`` and cannot be
    rebuilt from its string)."""

    source: str = ""
    blocks: int | tuple[str, ...] = DEFAULT_BLOCKS
    balance: str = "activations"
    options: tuple[tuple[str, Any], ...] = ()
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def model_options(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def safe(self) -> bool:
        """Whether the source is rebuilt from an installed model zoo (no user code is imported)."""
        return self.source.partition(":")[0] in SAFE_KINDS


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"model option value {value!r} cannot be written in a model spec (empty or with spaces)")
    return text


def _read(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _blocks(value: Any) -> int | tuple[str, ...]:
    if isinstance(value, str):
        value = int(value) if value.strip().isdigit() else [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"blocks={value}: need at least 1 block")
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(f"blocks={value!r}: expected a block count or module names to cut after (layer1,layer2)")


def _cut(blocks: int | str | Sequence[str] | None, balance: str | None) -> tuple[int | tuple[str, ...], str, str]:
    """The checked block setting and balance, and their spec text."""
    count = _blocks(DEFAULT_BLOCKS if blocks is None else blocks)
    balance = balance or "activations"
    if balance not in COSTS:
        raise ConfigError(f"balance={balance!r}: expected one of {', '.join(COSTS)}")
    if not isinstance(count, int) and balance != "activations":
        raise ConfigError("balance applies to a block count; named cut points (blocks=a,b) are cut as named")
    return count, balance, f"blocks={count if isinstance(count, int) else ','.join(count)} balance={balance}"


def model_arch(source: str, blocks: int | str | Sequence[str] | None = None, balance: str | None = None,
               options: Mapping[str, Any] | None = None) -> str:
    """The canonical ``model:`` spec string for these settings (checked, not built)."""
    source = source.strip()
    kind, sep, name = source.partition(":")
    if not sep or not kind or not name or any(c.isspace() for c in source):
        raise ConfigError(f"model {source!r}: expected torchvision:NAME, timm:NAME or package.module:factory")
    if kind == OBJECT:
        raise ConfigError(f"model {source!r} was a Python object given to localearn.localize(); it cannot be "
                          "rebuilt from its name: build the learner again with localize(your_model, ...)")
    parts = [PREFIX + source, _cut(blocks, balance)[2]]
    for key, value in sorted((options or {}).items()):
        if key in ("blocks", "balance") or not key.isidentifier():
            raise ConfigError(f"model option {key!r} is not a constructor keyword "
                              "(blocks and balance are cut settings)")
        parts.append(f"{key}={_shown(value)}")
    return " ".join(parts)


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``model:SOURCE KEY=VALUE ...`` (see the module docstring)."""
    tokens = text.strip()[len(PREFIX):].split()
    if not tokens:
        raise ConfigError(f"bad architecture spec {text!r}: expected model:SOURCE, e.g. model:torchvision:resnet18")
    cut: dict[str, str] = {}
    options: dict[str, Any] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad model spec {text!r}: {token!r} is not KEY=VALUE")
        if key in ("blocks", "balance"):
            cut[key] = value
        else:
            options[key] = _read(value)
    raw = model_arch(tokens[0], cut.get("blocks"), cut.get("balance"), options)
    count, balance, _ = _cut(cut.get("blocks"), cut.get("balance"))
    return ModelSpec(kind="model", widths=(), raw=raw, source=tokens[0], blocks=count, balance=balance,
                     options=tuple(sorted(options.items())))


def object_spec(model: nn.Module, blocks: int | str | Sequence[str] | None, balance: str | None) -> ModelSpec:
    """The spec of a model object (:func:`~localearn.models.localize`): cut like a named source, but
    only rebuildable from the object itself."""
    count, balance, text = _cut(blocks, balance)
    source = f"{OBJECT}:{type(model).__name__}"
    return ModelSpec(kind="model", widths=(), raw=f"{PREFIX}{source} {text}", source=source, blocks=count,
                     balance=balance, module=model)


def is_model_arch(arch: Any) -> bool:
    """Whether ``arch`` (a spec or its string) describes a model."""
    return isinstance(arch, ModelSpec) or (isinstance(arch, str) and arch.strip().startswith(PREFIX))


def check_named(arch: Any, named: str | None, where: str) -> None:
    """Refuse to rebuild, from a run directory's stored ``arch``, a model whose source is a user's
    module unless ``named`` (the ``--model`` the user gave) is that same source; a ``named`` model
    that is not the stored one is refused too."""
    if not is_model_arch(arch):
        if named is not None:
            raise LocalearnError(f"{where} holds a run of the architecture {arch}, not of the model {named.strip()}")
        return
    if not isinstance(arch, str):
        raise LocalearnError(f"{where}: the stored arch must be a spec string")
    spec = parse_model_spec(arch)
    if named is not None and named.strip() != spec.source:
        raise LocalearnError(f"{where} holds a run of the model {spec.source}, not {named.strip()}")
    if spec.safe or named is not None:
        return
    raise LocalearnError(f"{where} holds a run of the model {spec.source}, which names code to import; a run "
                         f"directory is data, never code: name the model again with --model {spec.source} "
                         "(model=... in Python) to rebuild it")
