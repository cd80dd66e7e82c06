"""The algorithm registry: one dict keyed by name, filled by ``@register_algorithm``.

Modelled on PyTorch Geometric's one-base-class-many-small-files layout: every learner lives in its
own module under ``localearn.algorithms`` and registers itself on import. Third-party packages
add learners through the ``localearn.algorithms`` entry-point group; each entry point names a
module (or a class) that is imported, which runs its ``@register_algorithm``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from localearn.errors import ConfigError

if TYPE_CHECKING:
    from localearn.learner import LocalLearner

_REGISTRY: dict[str, type[LocalLearner]] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False

L = TypeVar("L", bound="type[LocalLearner]")


def register_algorithm(cls: L) -> L:
    """Class decorator that registers a :class:`~localearn.learner.LocalLearner` by its ``name``.

    Raises:
        ValueError: if the name or one of its aliases is already taken.
    """
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__qualname__} has no `name` class attribute")
    for key in (name, *cls.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"algorithm name {key!r} is already registered")
    _REGISTRY[name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = name
    return cls


def _load_all() -> None:
    """Import the shipped algorithms and the entry-point plugins, once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module("localearn.algorithms")
    for ep in entry_points(group="localearn.algorithms"):
        ep.load()


def canonical_name(name: str) -> str:
    """Resolve an alias (``mf``) to its algorithm's name (``mono_forward``)."""
    _load_all()
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        valid = ", ".join(list_algorithms())
        raise ConfigError(f"unknown algorithm {name!r}; valid names: {valid}")
    return key


def get_algorithm(name: str) -> type[LocalLearner]:
    """The learner class registered under ``name`` or one of its aliases."""
    return _REGISTRY[canonical_name(name)]


def create_learner(name: str, **kwargs: Any) -> LocalLearner:
    """Build the learner registered under ``name`` (aliases accepted) with ``kwargs``."""
    return get_algorithm(name)(**kwargs)


def list_algorithms() -> list[str]:
    """Sorted names of every registered learner (aliases excluded)."""
    _load_all()
    return sorted(_REGISTRY)


def aliases_of(name: str) -> tuple[str, ...]:
    """The aliases registered for ``name``."""
    return tuple(a for a, n in _ALIASES.items() if n == canonical_name(name))
