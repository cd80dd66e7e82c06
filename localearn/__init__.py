"""localearn: train neural networks without end-to-end backpropagation.

Public API: :func:`create_learner`, :func:`list_algorithms`, :func:`register_algorithm`,
:class:`LocalLayer`, :class:`LocalLearner`, :class:`Trainer`, :class:`TrainConfig`, :func:`fit`,
:func:`load_dataset`.
"""

from localearn.arch import ArchSpec, parse_arch
from localearn.data import list_datasets, load_dataset
from localearn.errors import ConfigError, DataNotFoundError, LocalearnError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner, Stage
from localearn.registry import create_learner, get_algorithm, list_algorithms, register_algorithm
from localearn.run import fit, load_run
from localearn.trainer import Callback, TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "Callback",
    "ConfigError",
    "Context",
    "DataNotFoundError",
    "LocalLayer",
    "LocalLearner",
    "LocalearnError",
    "Stage",
    "TrainConfig",
    "Trainer",
    "create_learner",
    "fit",
    "get_algorithm",
    "list_algorithms",
    "list_datasets",
    "load_dataset",
    "load_run",
    "parse_arch",
    "register_algorithm",
]
