"""localearn: train neural networks without end-to-end backpropagation.

Public API: :func:`create_learner`, :func:`list_algorithms`, :func:`register_algorithm`,
:class:`LocalLayer`, :class:`LocalLearner`, :class:`Trainer`, :class:`TrainConfig`, :func:`fit`,
:func:`load_dataset`; your own data: :func:`from_loaders`, :func:`from_pyg` (or pass DataLoaders to
the Trainer); your own modules: ``<Learner>.from_modules([...])``; your own model, cut into blocks
under a local learner: :func:`localize` (``localearn.models``).
"""

from typing import Any

from localearn.arch import ArchSpec, parse_arch
from localearn.data import DataBundle, ImageData, LoaderData, from_loaders, from_pyg, list_datasets, load_dataset
from localearn.errors import ConfigError, DataNotFoundError, LocalearnError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner, Stage
from localearn.registry import create_learner, get_algorithm, list_algorithms, register_algorithm
from localearn.run import fit, load_run
from localearn.trainer import Callback, TrainConfig, Trainer

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "localize":  # on first use: torch.fx and the model zoos stay out of `import localearn`
        from localearn.models.localize import localize

        return localize
    raise AttributeError(f"module 'localearn' has no attribute {name!r}")


__all__ = [
    "ArchSpec",
    "Callback",
    "ConfigError",
    "Context",
    "DataBundle",
    "DataNotFoundError",
    "ImageData",
    "LoaderData",
    "LocalLayer",
    "LocalLearner",
    "LocalearnError",
    "Stage",
    "TrainConfig",
    "Trainer",
    "create_learner",
    "fit",
    "from_loaders",
    "from_pyg",
    "get_algorithm",
    "list_algorithms",
    "list_datasets",
    "load_dataset",
    "load_run",
    "localize",
    "parse_arch",
    "register_algorithm",
]
