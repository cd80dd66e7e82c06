"""The dataset container the trainer consumes."""

from __future__ import annotations

import dataclasses
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

    def nbytes(self) -> int | None:
        """Bytes of the tensors this bundle holds in memory (None: it streams from loaders)."""
        return None

    def to(self, device: torch.device) -> DataBundle:
        """This bundle with its in-memory tensors on ``device`` (itself when it has none)."""
        return self


@dataclass
class ImageData(DataBundle):
    """Tensors held in memory: ``x_*`` float (N, C, H, W) normalised, ``y_*`` int64.

    With an ``augment`` callable, training batches are augmented per sample (the validation split
    never is: it is carved from the training tensors but served with the evaluation transform,
    docs/reference/setups.md#data).
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

    def nbytes(self) -> int | None:
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def to(self, device: torch.device) -> ImageData:
        """A copy held on ``device`` (shuffled there, in the same seeded order as on the CPU)."""
        moved: dict[str, Any] = {k: t.to(device) for k, t in self._tensors().items()}
        return dataclasses.replace(self, **moved)

    def _tensors(self) -> dict[str, Tensor]:
        return {f"{v}_{s}": getattr(self, f"{v}_{s}") for v in "xy" for s in ("train", "val", "test")}

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled batches with ``drop_last`` (the protocol's loader settings)."""
        n = self.num_train
        if n < batch_size:  # tiny datasets: one smaller batch instead of none
            batch_size = n
        perm = torch.randperm(n, generator=generator).to(self.y_train.device)  # the CPU's seeded order
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


def place_data(data: DataBundle, device: torch.device, mode: str = "auto") -> DataBundle:
    """``data`` for training on ``device`` (``--data-on-device``): an in-memory dataset moves to a
    CUDA device once (``auto``: when it takes at most a quarter of the free memory; ``on``: always)
    and is shuffled there; DataLoaders stay on the host and pin their batches for non-blocking copies."""
    if device.type != "cuda" or mode == "off":
        return data
    size = data.nbytes()
    if size is None:
        for loader in getattr(data, "loaders", {}).values():
            loader.pin_memory = True  # read when the loader starts an iteration
        return data
    if mode == "auto" and size > torch.cuda.mem_get_info(device)[0] // 4:
        return data
    return data.to(device)
