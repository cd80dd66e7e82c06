"""Datasets: a small registry of loaders that return a :class:`DataBundle`.

Every dataset reads a local ``data_dir`` and downloads only when asked (``download=True``) and
possible; a missing dataset raises :class:`~localearn.errors.DataNotFoundError` naming the files
and where to put them. Datasets that ship inside installed packages (scikit-learn's ``digits``)
work offline at once; ``digits`` is the default. The built-in loaders register on import here;
heavy dependencies (torchvision, torch_geometric) load only when a loader runs.
"""

from __future__ import annotations

from localearn.data import graphs, vision  # noqa: F401  (importing them registers the built-in loaders)
from localearn.data.adapters import LoaderData, as_bundle, from_loaders, from_pyg
from localearn.data.base import DataBundle, ImageData
from localearn.data.registry import (
    DEFAULT_DATASET,
    canonical_dataset,
    dataset_kind,
    default_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DEFAULT_DATASET",
    "DataBundle",
    "ImageData",
    "LoaderData",
    "as_bundle",
    "canonical_dataset",
    "dataset_kind",
    "default_data_dir",
    "from_loaders",
    "from_pyg",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
