"""Image datasets: digits (bundled), MNIST, Fashion-MNIST, CIFAR-10/100, the CIFAR-10 subset.

Files are read with torchvision's dataset classes where torchvision has one; the tensors are then
normalised once, in memory, with the constants of docs/reference/setups.md#data, and split:

* MNIST: first 50 000 train / last 10 000 validation / the official 10 000 test.
* Fashion-MNIST, CIFAR-10/100, the CIFAR-10 subset: a seeded 90/10 train/validation split.
* digits (scikit-learn, 1 797 8×8 images): a fixed 20 % test split (seed 0), then a seeded 10 %
  validation split; standardised with the training split's mean and std.

CIFAR training batches get RandomCrop(32, pad 4, reflect) + horizontal flip unless
``augment=False``; the validation split is never augmented.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from localearn.data.base import ImageData
from localearn.data.registry import register_dataset
from localearn.errors import DataNotFoundError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    # The widely copied CIFAR-10 std (0.2023, ...), reproduced as the reference used it (docs/reference/setups.md#data).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


def _normalise(x: Tensor, key: str) -> Tensor:
    mean, std = NORMALISATION[key]
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def _seeded_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def _bundle(
    name: str,
    x_trainval: Tensor,
    y_trainval: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    train_idx: Tensor,
    val_idx: Tensor,
    info: dict,
    augment: bool = False,
) -> ImageData:
    return ImageData(
        name=name,
        input_shape=tuple(x_trainval.shape[1:]),
        num_classes=int(max(y_trainval.max(), y_test.max())) + 1,
        info=info,
        x_train=x_trainval[train_idx].contiguous(),
        y_train=y_trainval[train_idx].contiguous(),
        x_val=x_trainval[val_idx].contiguous(),
        y_val=y_trainval[val_idx].contiguous(),
        x_test=x_test.contiguous(),
        y_test=y_test.contiguous(),
        augment=cifar_augment if augment else None,
    )


def cifar_augment(x: Tensor) -> Tensor:
    """RandomCrop(32, padding 4, reflect) + RandomHorizontalFlip(0.5), per sample, as one gather
    on ``x``'s device (no per-sample Python loop, no host read of the random draws)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (n,)).to(x.device)
    dx = torch.randint(0, 9, (n,)).to(x.device)
    flip = (torch.rand(n) < 0.5).to(x.device)
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # (n, h)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (n, w), mirrored when flipped
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


# --------------------------------------------------------------------------------------- digits
@register_dataset("digits")
def load_digits(data_dir: Path, *, download: bool = False, split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8×8 handwritten digits (offline, the default dataset)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    rest, test = _seeded_split(len(y), 0.2, 0)  # the test split never moves with the seed
    tr, va = _seeded_split(len(rest), 0.1, split_seed)
    train_idx, val_idx = rest[tr], rest[va]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    info = {
        "source": "sklearn.datasets.load_digits",
        "split": "fixed 20% test (seed 0), seeded 10% validation",
        "split_seed": split_seed,
        "normalisation": {"mean": float(mean), "std": float(std), "from": "training split"},
    }
    return _bundle("digits", x, y, x[test], y[test], train_idx, val_idx, info)


# ---------------------------------------------------------------------------------------- MNIST
def _find_idx_dir(data_dir: Path, folder: str) -> Path | None:
    """A folder holding the four IDX files, uncompressed or gzipped, in any usual layout."""
    for cand in (data_dir / folder / "raw", data_dir / folder.lower(), data_dir / folder, data_dir):
        if all((cand / f).exists() or (cand / f"{f}.gz").exists() for f in MNIST_FILES):
            return cand
    return None


def _torchvision_root(src: Path, folder: str, data_dir: Path) -> Path:
    """A root with ``<folder>/raw/`` holding *uncompressed* IDX files, as torchvision wants.

    Uses ``src`` itself when it already is that layout; otherwise decompresses into
    ``$LOCALEARN_CACHE_DIR`` (default ``~/.cache/localearn``) or, failing that,
    ``<data_dir>/.localearn/``; the user's data folder is never written when the cache works.
    """
    if src.name == "raw" and all((src / f).exists() for f in MNIST_FILES):
        return src.parent.parent
    cache = Path(os.environ.get("LOCALEARN_CACHE_DIR", Path.home() / ".cache" / "localearn"))
    for base in (cache, data_dir / ".localearn"):
        raw = base / folder / "raw"
        try:
            raw.mkdir(parents=True, exist_ok=True)
            for f in MNIST_FILES:
                if (raw / f).exists():
                    continue
                if (src / f).exists():
                    shutil.copyfile(src / f, raw / f)
                else:
                    with gzip.open(src / f"{f}.gz", "rb") as fin, open(raw / f, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
            return base
        except OSError:
            continue
    raise DataNotFoundError(f"cannot unpack {folder} files from {src}: no writable cache directory")


def _load_idx_dataset(cls_name: str, folder: str, key: str, data_dir: Path, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    src = _find_idx_dir(data_dir, folder)
    if src is None:
        if not download:
            files = ", ".join(f"{f}(.gz)" for f in MNIST_FILES)
            raise DataNotFoundError(
                f"{key} not found under {data_dir}: put {files} in {data_dir / folder / 'raw'} "
                f"(or {data_dir / folder.lower()}), or pass --download"
            )
        root = data_dir
        train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
    else:
        root = _torchvision_root(src, folder, data_dir)
        train, test = cls(root, train=True), cls(root, train=False)
    xs = [torch.as_tensor(ds.data).unsqueeze(1).float() / 255.0 for ds in (train, test)]
    ys = [torch.as_tensor(ds.targets).long() for ds in (train, test)]
    return xs, ys, str(src or root)


@register_dataset("mnist")
def load_mnist(data_dir: Path, *, download: bool = False, split_seed: int = 0) -> ImageData:
    """MNIST: first 50 000 train / last 10 000 validation / official test (protocol docs/reference/setups.md#data)."""
    (xtr, xte), (ytr, yte), src = _load_idx_dataset("MNIST", "MNIST", "mnist", data_dir, download)
    xtr, xte = _normalise(xtr, "mnist"), _normalise(xte, "mnist")
    info = {"source": src, "split": "first 50000 / last 10000 / official test",
            "normalisation": NORMALISATION["mnist"]}
    return _bundle("mnist", xtr, ytr, xte, yte, torch.arange(50000), torch.arange(50000, 60000), info)


@register_dataset("fashion_mnist", "fmnist")
def load_fashion_mnist(data_dir: Path, *, download: bool = False, split_seed: int = 0) -> ImageData:
    """Fashion-MNIST: seeded 90/10 train/validation, official test."""
    (xtr, xte), (ytr, yte), src = _load_idx_dataset(
        "FashionMNIST", "FashionMNIST", "fashion_mnist", data_dir, download
    )
    xtr, xte = _normalise(xtr, "fashion_mnist"), _normalise(xte, "fashion_mnist")
    tr, va = _seeded_split(len(ytr), 0.1, split_seed)
    info = {"source": src, "split": "seeded 90/10", "split_seed": split_seed,
            "normalisation": NORMALISATION["fashion_mnist"]}
    return _bundle("fashion_mnist", xtr, ytr, xte, yte, tr, va, info)


# ---------------------------------------------------------------------------------------- CIFAR
def _cifar(
    name: str, cls_name: str, folder: str, data_dir: Path, download: bool, split_seed: int,
    augment: bool,
) -> ImageData:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    if not (data_dir / folder).exists() and not download:
        raise DataNotFoundError(
            f"{name} not found: extract the python version of the dataset so that "
            f"{data_dir / folder} exists (torchvision layout), or pass --download"
        )
    train, test = cls(data_dir, train=True, download=download), cls(data_dir, train=False, download=download)
    return _from_uint8(name, train.data, train.targets, test.data, test.targets, split_seed, augment,
                       {"source": str(data_dir / folder)})


def _from_uint8(
    name: str, xtr: np.ndarray, ytr: Sequence[int] | np.ndarray, xte: np.ndarray,
    yte: Sequence[int] | np.ndarray, split_seed: int, augment: bool, info: dict,
) -> ImageData:
    key = "cifar100" if name == "cifar100" else "cifar10"
    to_t = lambda a: torch.as_tensor(np.asarray(a)).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    x_trval, x_test = _normalise(to_t(xtr), key), _normalise(to_t(xte), key)
    y_trval, y_test = torch.as_tensor(np.asarray(ytr)).long(), torch.as_tensor(np.asarray(yte)).long()
    tr, va = _seeded_split(len(y_trval), 0.1, split_seed)
    info = {**info, "split": "seeded 90/10", "split_seed": split_seed,
            "normalisation": NORMALISATION[key], "augment": augment}
    return _bundle(name, x_trval, y_trval, x_test, y_test, tr, va, info, augment=augment)


@register_dataset("cifar10")
def load_cifar10(data_dir: Path, *, download: bool = False, split_seed: int = 0,
                 augment: bool = True) -> ImageData:
    """CIFAR-10 through torchvision (``<data_dir>/cifar-10-batches-py``)."""
    return _cifar("cifar10", "CIFAR10", "cifar-10-batches-py", data_dir, download, split_seed, augment)


@register_dataset("cifar100")
def load_cifar100(data_dir: Path, *, download: bool = False, split_seed: int = 0,
                  augment: bool = True) -> ImageData:
    """CIFAR-100 through torchvision (``<data_dir>/cifar-100-python``)."""
    return _cifar("cifar100", "CIFAR100", "cifar-100-python", data_dir, download, split_seed, augment)


SUBSET_FILE = "cifar10_subset_train4000_test1000.npz"


@register_dataset("cifar10_subset", "cifar10-subset")
def load_cifar10_subset(data_dir: Path, *, download: bool = False, split_seed: int = 0,
                        augment: bool = True) -> ImageData:
    """The offline CIFAR-10 subset ``.npz`` (4 000 train, 1 000 test; keys x_/y_train/test)."""
    cands = [data_dir, data_dir / SUBSET_FILE, data_dir / "cifar10" / SUBSET_FILE]
    path = next((p for p in cands if p.is_file() and p.suffix == ".npz"), None)
    if path is None:
        raise DataNotFoundError(
            f"cifar10_subset not found: put {SUBSET_FILE} (keys x_train, y_train, x_test, y_test) "
            f"in {data_dir / 'cifar10'} or {data_dir}"
        )
    with np.load(path) as z:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
        if missing:
            raise DataNotFoundError(f"{path} lacks the arrays {sorted(missing)}")
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    if arrays["x_train"].ndim != 4 or arrays["x_train"].shape[-1] != 3:
        raise DataNotFoundError(f"{path}: x_train must be (N, 32, 32, 3) uint8, got {arrays['x_train'].shape}")
    return _from_uint8("cifar10_subset", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                       arrays["y_test"], split_seed, augment, {"source": str(path)})
