from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import localearn
from localearn.data import dataset_kind, list_datasets, load_dataset
from localearn.errors import ConfigError, DataNotFoundError


def test_digits_is_offline_and_split_is_seeded() -> None:
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.num_train + len(a.y_val) + len(a.y_test) == 1797
    assert torch.equal(a.y_test, b.y_test)  # the test split never moves with the seed
    assert not torch.equal(a.y_val, b.y_val)
    assert abs(float(a.x_train.mean())) < 1e-4  # standardised on the training split


def test_graph_learners_default_to_the_bundled_graph() -> None:
    r = localearn.fit("fgnn", None, arch="gcn:8x1", epochs=2, progress=False)
    assert r["dataset"] == "karate" and dataset_kind("karate") == "graph" and dataset_kind("mnist") == "image"


def test_dataset_options_are_checked_by_name_and_type(shared_data: Path) -> None:
    with pytest.raises(ConfigError, match="dataset mnist has no option 'augment'; it takes no options"):
        load_dataset("mnist", shared_data, augment=True)
    with pytest.raises(ConfigError, match=r"option augment='maybe' must be a bool \(default True\)"):
        load_dataset("cifar10_subset", shared_data, augment="maybe")
    assert load_dataset("cifar10_subset", shared_data, augment=False).augment is None


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; valid names: .*mnist"):
        load_dataset("imagenet")
    assert "cifar10_subset" in list_datasets()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "cifar10_subset"])
def test_missing_data_names_files_and_place(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=str(tmp_path)) as err:
        load_dataset(name, tmp_path)
    assert "--download" in str(err.value) or ".npz" in str(err.value)


def test_mnist_from_shared_gz_files(shared_data: Path) -> None:
    d = load_dataset("mnist", shared_data)
    assert (d.num_train, len(d.y_val), len(d.y_test)) == (50000, 10000, 10000)
    assert d.input_shape == (1, 28, 28)
    # Normalised with the protocol constants: the training mean is close to 0.
    assert abs(float(d.x_train.mean())) < 0.01
    assert not (shared_data / ".localearn").exists()  # nothing written into the shared folder


def test_cifar_subset_validation_is_never_augmented(shared_data: Path) -> None:
    d = load_dataset("cifar10_subset", shared_data)
    assert d.augment is not None and d.info["augment"] is True
    x1, _ = next(d.eval_batches("val", 64))
    x2, _ = next(d.eval_batches("val", 64))
    assert torch.equal(x1, x2)  # evaluation transform only
    g = torch.Generator().manual_seed(0)
    xa, _ = next(d.train_batches(64, g))
    assert xa.shape == (64, 3, 32, 32)


def test_cifar_subset_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "cifar10_subset_train4000_test1000.npz", x_train=np.zeros((2, 32, 32, 3)))
    with pytest.raises(DataNotFoundError, match="lacks the arrays"):
        load_dataset("cifar10_subset", tmp_path)
