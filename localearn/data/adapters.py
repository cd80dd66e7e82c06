"""Your own data: torch ``DataLoader``s and PyG graphs as :class:`DataBundle`s for the Trainer.

The Trainer consumes a :class:`~localearn.data.base.DataBundle`; :func:`as_bundle` is what it
calls on whatever it is given, so ``Trainer(learner, (train_loader, val_loader))`` and
``Trainer(learner, pyg_data)`` work beside the bundled datasets. Loaders keep their own batch
size and collate function (the Trainer's ``batch_size`` applies to bundled data only); a
shuffling loader's order is seeded by the Trainer per epoch, as for bundled data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from localearn.data.base import DataBundle
from localearn.data.graphs import GraphData
from localearn.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass
class LoaderData(DataBundle):
    """Train / validation / test ``DataLoader``s yielding ``(x, y)`` batches."""

    loaders: dict[str, DataLoader[Any]] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        dataset = self.loaders["train"].dataset
        return len(dataset) if hasattr(dataset, "__len__") else len(self.loaders["train"])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
        loader = self.loaders["train"]
        sampler = loader.sampler
        if isinstance(sampler, RandomSampler):  # the Trainer's seeded per-epoch order
            old, sampler.generator = sampler.generator, generator
            try:
                yield from loader
            finally:
                sampler.generator = old
        else:
            yield from loader

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Any]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        yield from self.loaders[split]

    def num_batches(self, batch_size: int) -> int:
        return max(len(self.loaders["train"]), 1)


def _first(loader: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(loader, DataLoader):
        raise ConfigError(f"{what} must be a torch.utils.data.DataLoader, got {type(loader).__name__}")
    batch = next(iter(loader), None)
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)):
        raise ConfigError(f"{what} must yield (x, y) batches of tensors, got {type(batch).__name__}")
    return batch[0], torch.as_tensor(batch[1])


def from_loaders(train: DataLoader[Any], val: DataLoader[Any], test: DataLoader[Any] | None = None,
                 num_classes: int | None = None, name: str = "loaders") -> LoaderData:
    """A :class:`DataBundle` over your ``DataLoader``s of ``(x, y)`` batches.

    Args:
        train: the training loader (its shuffle order is seeded by the Trainer).
        val: the validation loader (early stopping, best-epoch restore).
        test: the test loader; None reuses ``val`` and ``info`` says so.
        num_classes: C; None scans the training labels once for their maximum.
        name: the dataset name written into ``run.json``.
    """
    x, y = _first(train, "train")
    _first(val, "val")
    if test is not None:
        _first(test, "test")
    if num_classes is None:
        num_classes = int(max(int(torch.as_tensor(b[1]).max()) for b in train)) + 1
    if num_classes < 2 or y.dtype.is_floating_point:
        raise ConfigError(f"from_loaders needs integer class labels and num_classes >= 2, got "
                          f"labels of dtype {y.dtype} and num_classes={num_classes}")
    info = {"source": "user DataLoaders", "batch_size": train.batch_size,
            "test": "the test loader" if test is not None else "no test loader: test = validation loader"}
    return LoaderData(name=name, input_shape=tuple(x.shape[1:]), num_classes=num_classes, info=info,
                      loaders={"train": train, "val": val, "test": test if test is not None else val})


def from_pyg(graph: Any, num_classes: int | None = None, name: str = "pyg") -> DataBundle:
    """A graph :class:`DataBundle` over a PyG ``Data`` with ``train_mask``, ``val_mask``, ``test_mask``.

    Features are used as given (the bundled graphs are row-normalised; yours are not touched).
    """
    missing = [m for m in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask")
               if getattr(graph, m, None) is None]
    if missing:
        raise ConfigError(f"from_pyg needs a graph with x, y, edge_index and boolean train/val/test masks; "
                          f"missing: {', '.join(missing)}")
    graph.y = graph.y.long().view(-1)
    classes = int(graph.y.max()) + 1 if num_classes is None else int(num_classes)
    info = {"source": "user PyG Data", "nodes": int(graph.num_nodes), "edges": int(graph.edge_index.shape[1]),
            "split_sizes": [int(getattr(graph, f"{s}_mask").sum()) for s in SPLITS]}
    return GraphData(name=name, input_shape=(int(graph.x.shape[1]),), num_classes=classes, info=info,
                     graph=graph)


def as_bundle(data: Any) -> DataBundle:
    """What the Trainer accepts: a DataBundle, ``(train, val[, test])`` loaders, or a PyG ``Data``."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, (tuple, list)) and 2 <= len(data) <= 3 and all(isinstance(d, DataLoader) for d in data):
        return from_loaders(*data)
    if hasattr(data, "edge_index") and hasattr(data, "train_mask"):
        return from_pyg(data)
    raise ConfigError(f"the Trainer takes a DataBundle (localearn.load_dataset), (train, val[, test]) "
                      f"DataLoaders or a PyG Data with masks; got {type(data).__name__}")
