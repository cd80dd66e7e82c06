"""The algorithm registry: learner name -> class, filled by ``@register_algorithm``.

Modelled on PyTorch Geometric's one-base-class-many-small-files layout: every learner lives in its
own module under ``localearn.algorithms`` and registers itself on import. The shipped learners are
listed in ``localearn.algorithms.SHIPPED`` (name -> module, aliases) and imported only when a
learner is asked for, so ``import localearn`` and the image learners stay free of graph
dependencies. Third-party packages add learners through the ``localearn.algorithms`` entry-point
group; each entry point names a module (or a class) that is imported, which runs its
``@register_algorithm``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from localearn.algorithms import SHIPPED
from localearn.errors import ConfigError

if TYPE_CHECKING:
    from localearn.learner import LocalLearner

_REGISTRY: dict[str, type[LocalLearner]] = {}
_ALIASES: dict[str, str] = {}
_SHIPPED_ALIASES = {alias: name for name, (_, aliases) in SHIPPED.items() for alias in aliases}
_LOADED = False

L = TypeVar("L", bound="type[LocalLearner]")


def register_algorithm(cls: L) -> L:
    """Class decorator that registers a :class:`~localearn.learner.LocalLearner` by its ``name``.

    Raises:
        ValueError: if the name or one of its aliases is already taken (by a registered learner,
            or by a shipped one defined in another module).
    """
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__qualname__} has no `name` class attribute")
    for key in (name, *cls.aliases):
        owner = _SHIPPED_ALIASES.get(key, key)
        shipped_elsewhere = owner in SHIPPED and not cls.__module__.startswith(SHIPPED[owner][0])
        if key in _REGISTRY or key in _ALIASES or shipped_elsewhere:
            raise ValueError(f"algorithm name {key!r} is already registered")
    _REGISTRY[name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = name
    return cls


def _load_plugins() -> None:
    """Import the entry-point plugins, once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for ep in entry_points(group="localearn.algorithms"):
        ep.load()


def _resolve(key: str) -> str | None:
    key = _ALIASES.get(key, _SHIPPED_ALIASES.get(key, key))
    if key in _REGISTRY:
        return key
    if key in SHIPPED:
        importlib.import_module(SHIPPED[key][0])  # registers the class on import
        return key if key in _REGISTRY else None
    return None


def canonical_name(name: str) -> str:
    """Resolve an alias (``mf``) to its algorithm's name (``mono_forward``), importing it."""
    key = name.strip().lower().replace("-", "_")
    found = _resolve(key)
    if found is None:
        _load_plugins()
        found = _resolve(key)
    if found is None:
        valid = ", ".join(list_algorithms())
        raise ConfigError(f"unknown algorithm {name!r}; valid names: {valid}")
    return found


def get_algorithm(name: str) -> type[LocalLearner]:
    """The learner class registered under ``name`` or one of its aliases."""
    return _REGISTRY[canonical_name(name)]


def create_learner(name: str, **kwargs: Any) -> LocalLearner:
    """Build the learner registered under ``name`` (aliases accepted) with ``kwargs``."""
    return get_algorithm(name)(**kwargs)


def list_algorithms() -> list[str]:
    """Sorted names of every learner, shipped or plugged in (aliases excluded); imports none."""
    _load_plugins()
    return sorted(set(_REGISTRY) | set(SHIPPED))


def aliases_of(name: str) -> tuple[str, ...]:
    """The aliases registered for ``name``."""
    return tuple(get_algorithm(name).aliases)
