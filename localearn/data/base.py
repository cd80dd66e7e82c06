"""The dataset container the trainer consumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class DataBundle:
    """Train / validation / test data plus what a learner needs to know about it.

    Subclasses decide how batches are served: :class:`ImageData` shuffles tensors,
    graph data serves one full graph.

    Attributes:
        name: the dataset's registry name.
        input_shape: one sample's shape (a node's feature count for graphs).
        num_classes: C.
        info: provenance (source files, split, normalisation) written into ``run.json``.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"

    @property
    def num_train(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def num_batches(self, batch_size: int) -> int:
        return max(self.num_train // batch_size, 1)


@dataclass
class ImageData(DataBundle):
    """Tensors held in memory: ``x_*`` float (N, C, H, W) normalised, ``y_*`` int64.

    With an ``augment`` callable, training batches are augmented per sample (the validation split
    never is: it is carved from the training tensors but served with the evaluation transform,
    STUDY_PROTOCOL.md §7.1).
    """

    x_train: Tensor = field(default_factory=lambda: torch.empty(0))
    y_train: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    x_val: Tensor = field(default_factory=lambda: torch.empty(0))
    y_val: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    x_test: Tensor = field(default_factory=lambda: torch.empty(0))
    y_test: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    augment: Callable[[Tensor], Tensor] | None = None

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled batches with ``drop_last`` (the protocol's loader settings)."""
        n = self.num_train
        if n < batch_size:  # tiny datasets: one smaller batch instead of none
            batch_size = n
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            x = self.x_train[idx]
            if self.augment is not None:
                x = self.augment(x)
            yield x, self.y_train[idx]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.split(split)
        for start in range(0, len(y), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
