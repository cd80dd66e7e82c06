"""The dataset registry: names and aliases to loaders that return a :class:`DataBundle`.

Loaders register themselves on import (``@register_dataset``); :mod:`localearn.data` imports the
built-in ones (:mod:`.vision`, :mod:`.graphs`), which import this module, never the package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localearn.data.base import DataBundle
from localearn.errors import ConfigError
from localearn.utils import check_kwargs

Loader = Callable[..., DataBundle]
_DATASETS: dict[str, Loader] = {}
_ALIASES: dict[str, str] = {}
_KINDS: dict[str, str] = {}
DEFAULT_DATASET = "digits"


def register_dataset(name: str, *aliases: str, kind: str = "image") -> Callable[[Loader], Loader]:
    """Register a loader ``fn(data_dir, *, download, split_seed, **options) -> DataBundle``.

    ``kind`` (``image`` or ``graph``) lets a wrong learner/dataset pairing fail before loading.
    """

    def deco(fn: Loader) -> Loader:
        for key in (name, *aliases):
            if key in _DATASETS or key in _ALIASES:
                raise ValueError(f"dataset {key!r} is already registered")
        _DATASETS[name] = fn
        _KINDS[name] = kind
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def dataset_kind(name: str) -> str:
    """``image`` or ``graph``."""
    return _KINDS[canonical_dataset(name)]


def default_data_dir() -> Path:
    """``$LOCALEARN_DATA_DIR``, else ``./data``."""
    return Path(os.environ.get("LOCALEARN_DATA_DIR", "data"))


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def canonical_dataset(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return key


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    split_seed: int = 0,
    **options: Any,
) -> DataBundle:
    """Load dataset ``name`` from ``data_dir`` (default :func:`default_data_dir`).

    Args:
        name: a registered dataset name or alias.
        data_dir: where the files are (or go, with ``download``).
        download: fetch missing files when the network allows.
        split_seed: seeds the validation split carved from the training set.
        options: dataset-specific options (e.g. ``augment`` for CIFAR).
    """
    key = canonical_dataset(name)
    check_kwargs(_DATASETS[key], options, f"dataset {key}", skip=("data_dir", "download", "split_seed"))
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return _DATASETS[key](root, download=download, split_seed=split_seed, **options)
