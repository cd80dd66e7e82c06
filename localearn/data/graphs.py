"""Graph datasets (torch_geometric): KarateClub (bundled), Planetoid, CitationFull, Amazon, GitHub.

The node-classification data of Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024
(arXiv 2403.11004), docs/learners/forward_gnn.md#reference. Every graph is served whole (full-batch training):

* ``karate``: KarateClub, shipped inside torch_geometric (offline). A seeded, per-class split of
  about 50 / 25 / 25 % (``split_seed``), since PyG's own mask holds one node per class only.
* ``cora``, ``citeseer``, ``pubmed``: Planetoid with its public split (140 / 500 / 1000 on Cora).
* ``cora_ml``, ``citeseer_full``, ``pubmed_full``, ``cora_full`` (CitationFull), ``amazon_photo``,
  ``amazon_computers`` and ``github``: the paper's 64 / 16 / 20 split, regenerated as the reference
  scripts describe it: ``KFold(5, shuffle=True, random_state=101)`` over the nodes, fold ``split``
  (0..4) is the test part, then 20 % of the rest (``train_test_split``, ``random_state=101``) is
  validation. The published split files (NamyongPark/forwardgnn-datasplits) can differ from a
  regeneration (docs/learners/forward_gnn.md#pitfall-splits); this is a documented deviation.

Features are row-normalised (``NormalizeFeatures``) as in the paper.

**Where files are looked for.** For ``data_dir = D`` a dataset with PyG folder ``NAME`` in group
``GROUP`` (``planetoid``, ``citationfull``, ``amazon``, ``github``) is found at
``D/GROUP/NAME/raw/`` (e.g. ``D = ~/data``) or at ``D/NAME/raw/`` (e.g.
``D = ~/data/planetoid``). PyG writes ``processed/`` next to ``raw/``, so the raw files
are first copied into a writable cache, ``$LOCALEARN_CACHE_DIR/GROUP`` (default
``~/.cache/localearn/GROUP``), and loaded from there: a read-only data folder is never written.
``download=True`` fetches missing files into ``D/GROUP`` when the network allows.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from localearn.data.base import DataBundle
from localearn.data.registry import register_dataset
from localearn.errors import ConfigError, DataNotFoundError

SPLITS = ("train", "val", "test")
KFOLD_SEED = 101


@dataclass
class GraphData(DataBundle):
    """One graph with boolean ``train_mask``, ``val_mask`` and ``test_mask``, served whole.

    Training yields the graph itself once per epoch. Evaluation yields a shallow copy carrying
    ``eval_mask`` (the split's mask) and ``eval_split``, so that a graph learner's
    ``evaluate_batch`` returns ``(scores[eval_mask], y[eval_mask])``; :func:`node_mask` resolves
    the mask of either kind of batch.

    Attributes:
        graph: the ``torch_geometric.data.Data`` object.
    """

    graph: Any = None
    kind: str = "graph"

    @property
    def num_train(self) -> int:
        return int(self.graph.train_mask.sum())

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
        """The full graph, once (full-batch training; ``batch_size`` does not apply)."""
        yield self.graph

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Any]:
        """The full graph with ``eval_mask`` set to ``split``'s node mask."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        view = copy.copy(self.graph)  # shallow: tensors are shared, not copied
        view.eval_mask = getattr(self.graph, f"{split}_mask")
        view.eval_split = split
        yield view

    def num_batches(self, batch_size: int) -> int:
        return 1

    def nbytes(self) -> int | None:
        return sum(v.numel() * v.element_size() for _, v in self.graph if isinstance(v, torch.Tensor))

    def to(self, device: torch.device) -> GraphData:
        """A copy whose graph lives on ``device``."""
        return dataclasses.replace(self, graph=self.graph.to(device))


def node_mask(batch: Any) -> Tensor:
    """The nodes a batch is about: ``eval_mask`` for evaluation views, else ``train_mask``."""
    mask = getattr(batch, "eval_mask", None)
    return batch.train_mask if mask is None else mask


# ------------------------------------------------------------------------------------- splits
def _masks_from_index(n: int, train: Any, val: Any, test: Any) -> tuple[Tensor, Tensor, Tensor]:
    out = []
    for idx in (train, val, test):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(np.asarray(idx), dtype=torch.long)] = True
        out.append(mask)
    return out[0], out[1], out[2]


def kfold_masks(num_nodes: int, split: int) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's 64 / 16 / 20 split number ``split`` (0..4), see the module docstring."""
    from sklearn.model_selection import KFold, train_test_split

    if split not in range(5):
        raise ConfigError(f"split must be one of 0, 1, 2, 3, 4 (five folds), got {split!r}")
    folds = list(KFold(5, shuffle=True, random_state=KFOLD_SEED).split(np.arange(num_nodes)))
    trainval, test = folds[split]
    train, val = train_test_split(trainval, test_size=0.2, random_state=KFOLD_SEED, shuffle=True)
    return _masks_from_index(num_nodes, np.sort(train), np.sort(val), test)


def stratified_masks(
    y: Tensor, seed: int, fractions: tuple[float, float] = (0.5, 0.25)
) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded per-class split: ``fractions`` of each class to train and validation, rest test.

    Every class keeps at least one node in each split (small graphs such as KarateClub).
    """
    gen = torch.Generator().manual_seed(seed)
    train, val, test = [], [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_train = max(1, round(fractions[0] * len(idx)))
        n_val = max(1, round(fractions[1] * len(idx)))
        train.append(idx[:n_train])
        val.append(idx[n_train : n_train + n_val])
        test.append(idx[n_train + n_val :])
    return _masks_from_index(len(y), torch.cat(train), torch.cat(val), torch.cat(test))


def karate_club_data(seed: int = 0) -> Any:
    """KarateClub (34 nodes, 4 classes, identity features) with seeded train/val/test masks.

    Deterministic for a given ``seed``; the conformance suite's graph fixture.
    """
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    data.train_mask, data.val_mask, data.test_mask = stratified_masks(data.y, seed)
    return data


# ------------------------------------------------------------------------------------ loading
def cache_dir() -> Path:
    """Writable cache for PyG's ``processed/`` folders: ``$LOCALEARN_CACHE_DIR`` or ~/.cache."""
    env = os.environ.get("LOCALEARN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "localearn"


def _find_raw(data_dir: Path, group: str, folder: str, files: list[str]) -> Path | None:
    for raw in (data_dir / group / folder / "raw", data_dir / folder / "raw"):
        if all((raw / f).is_file() for f in files):
            return raw
    return None


def _load_pyg(
    data_dir: Path,
    download: bool,
    group: str,
    folder: str,
    files: list[str],
    build: Callable[[Path], Any],
) -> Any:
    """Find the raw files, copy them into the cache, and build the PyG dataset from there.

    ``build(root)`` must construct the PyG dataset whose raw folder is ``root/folder/raw``.
    """
    raw = _find_raw(data_dir, group, folder, files)
    if raw is None:
        if not download:
            raise DataNotFoundError(
                f"{folder}: missing {', '.join(files)}; put them in {data_dir / group / folder / 'raw'} "
                f"(or {data_dir / folder / 'raw'}), or pass download=True"
            )
        root = data_dir / group
        try:
            return build(root)[0]
        except OSError as exc:  # URLError is an OSError: no network
            raise DataNotFoundError(f"{folder}: download into {root} failed ({exc})") from exc
    root = cache_dir() / group
    dest = root / folder / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        src, dst = raw / f, dest / f
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    return build(root)[0]


def _finish(name: str, data: Any, masks: tuple[Tensor, Tensor, Tensor], info: dict[str, Any]) -> GraphData:
    from torch_geometric.transforms import NormalizeFeatures

    data = NormalizeFeatures()(data)
    data.train_mask, data.val_mask, data.test_mask = masks
    data.y = data.y.long().view(-1)
    info = {
        **info,
        "nodes": int(data.num_nodes),
        "edges": int(data.edge_index.shape[1]),
        "features": int(data.num_features),
        "split_sizes": [int(m.sum()) for m in masks],
        "normalisation": "NormalizeFeatures (rows sum to 1)",
    }
    return GraphData(
        name=name,
        input_shape=(int(data.num_features),),
        num_classes=int(data.y.max()) + 1,
        info=info,
        graph=data,
    )


@register_dataset("karate", "karate_club", kind="graph")
def load_karate(data_dir: Path, *, download: bool = False, split_seed: int = 0) -> GraphData:
    """KarateClub, bundled with torch_geometric; ``split_seed`` seeds the per-class split."""
    data = karate_club_data(split_seed)
    masks = (data.train_mask, data.val_mask, data.test_mask)
    return _finish("karate", data, masks, {"source": "torch_geometric.datasets.KarateClub",
                                           "split": f"per-class 50/25/25, seed {split_seed}"})


def _planetoid(name: str, pyg_name: str) -> Callable[..., GraphData]:
    def load(data_dir: Path, *, download: bool = False, split_seed: int = 0) -> GraphData:
        from torch_geometric.datasets import Planetoid

        files = [f"ind.{pyg_name.lower()}.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")]
        data = _load_pyg(Path(data_dir), download, "planetoid", pyg_name, files,
                         lambda root: Planetoid(str(root), pyg_name, split="public"))
        masks = (data.train_mask, data.val_mask, data.test_mask)
        return _finish(name, data, masks, {"source": f"Planetoid {pyg_name}", "split": "public"})

    load.__doc__ = f"Planetoid {pyg_name} with its public split."
    return load


def _kfold(
    name: str, group: str, folder: str, files: list[str], build: Callable[[Path], Any]
) -> Callable[..., GraphData]:
    def load(data_dir: Path, *, download: bool = False, split_seed: int = 0, split: int = 0) -> GraphData:
        if split not in range(5):
            raise ConfigError(f"split must be one of 0, 1, 2, 3, 4 (five folds), got {split!r}")
        data = _load_pyg(Path(data_dir), download, group, folder, files, build)
        masks = kfold_masks(int(data.num_nodes), split)
        return _finish(name, data, masks, {
            "source": f"{group} {folder}",
            "split": f"KFold(5, shuffle, random_state={KFOLD_SEED}) fold {split}, 20% of train to val",
        })

    load.__doc__ = f"{group} {folder} with the paper's 64/16/20 split number ``split``."
    return load


def _builder(cls_name: str, pyg_name: str | None) -> Callable[[Path], Any]:
    """``root -> cls(root, pyg_name)``, the PyG dataset whose raw files are in root/NAME/raw.

    The class is looked up when a dataset is loaded, so registering the names imports no PyG.
    """

    def build(root: Path) -> Any:
        import torch_geometric.datasets as pyg_datasets

        cls = getattr(pyg_datasets, cls_name)
        return cls(str(root), pyg_name) if pyg_name is not None else cls(str(root / "GitHub"))

    return build


def _register_all() -> None:
    for name, pyg_name in (("cora", "Cora"), ("citeseer", "CiteSeer"), ("pubmed", "PubMed")):
        register_dataset(name, kind="graph")(_planetoid(name, pyg_name))
    for name, cf in (("cora_ml", "cora_ml"), ("citeseer_full", "citeseer"), ("pubmed_full", "pubmed"),
                     ("cora_full", "cora")):
        loader = _kfold(name, "citationfull", cf, [f"{cf}.npz"], _builder("CitationFull", cf))
        register_dataset(name, kind="graph")(loader)
    for name, alias, am in (("amazon_photo", "photo", "Photo"), ("amazon_computers", "computers", "Computers")):
        loader = _kfold(name, "amazon", am, [f"amazon_electronics_{am.lower()}.npz"], _builder("Amazon", am))
        register_dataset(name, alias, kind="graph")(loader)
    register_dataset("github", kind="graph")(
        _kfold("github", "github", "GitHub", ["github.npz"], _builder("GitHub", None))
    )


_register_all()
