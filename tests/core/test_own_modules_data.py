"""Your own modules and your own data (issue #15, item 5): ``from_modules`` blocks train under
Mono-Forward and Forward-Forward without subclassing; DataLoaders and a PyG graph feed the Trainer."""

from __future__ import annotations

import pytest
import torch
from localearn.algorithms.forward_forward import ForwardForward
from localearn.algorithms.mono_forward import MonoForward
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import localearn
from localearn import ConfigError, TrainConfig, Trainer, from_loaders, from_pyg


@pytest.fixture(scope="module")
def digits() -> localearn.ImageData:
    data = localearn.load_dataset("digits")
    assert isinstance(data, localearn.ImageData)
    return data


def _fit(learner: localearn.LocalLearner, data: object, epochs: int, lr: float | None = None) -> dict:
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=epochs, lr=lr, progress=False, seed=0, device="cpu")
    return Trainer(learner, data, cfg).fit()  # type: ignore[arg-type]


def test_user_blocks_train_under_mono_forward(digits: localearn.ImageData) -> None:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU()), nn.Sequential(nn.Linear(128, 128), nn.ReLU())]
    learner = MonoForward.from_modules(blocks, input_shape=digits.input_shape, num_classes=10)
    assert [layer.body for layer in learner.layers] == blocks  # the user's own modules, one layer each
    result = _fit(learner, digits, epochs=5)
    assert result["arch"] == "modules:Sequential-Sequential"
    assert result["metrics"]["test_accuracy"] > 0.85  # seed 0: 0.91 (chance 0.10)


def test_user_blocks_train_under_forward_forward(digits: localearn.ImageData) -> None:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Flatten(), nn.Linear(64, 128)), nn.Linear(128, 128)]  # FF adds its ReLU
    learner = ForwardForward.from_modules(blocks, input_shape=digits.input_shape, num_classes=10)
    result = _fit(learner, digits, epochs=10, lr=0.01)
    assert result["metrics"]["test_accuracy"] > 0.85  # seed 0: 0.93


def test_from_modules_names_the_problem(digits: localearn.ImageData) -> None:
    with pytest.raises(ConfigError, match=r"block 1 \(Linear\) fails on input of shape \(128,\)"):
        MonoForward.from_modules([nn.Sequential(nn.Flatten(), nn.Linear(64, 128)), nn.Linear(7, 3)], (1, 8, 8))
    with pytest.raises(ConfigError, match=r"noprop does not take from_modules blocks .*works with mono_forward"):
        localearn.get_algorithm("noprop").from_modules([nn.Flatten()], (1, 8, 8))


def _loaders(data: localearn.ImageData, seed: int) -> tuple[DataLoader, DataLoader, DataLoader]:
    def loader(split: str, shuffle: bool) -> DataLoader:
        x, y = data.split(split)
        return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed))

    return loader("train", True), loader("val", False), loader("test", False)


def test_dataloaders_feed_the_trainer_reproducibly(digits: localearn.ImageData) -> None:
    accs = []
    for loader_seed in (1, 2):  # the Trainer's seed, not the loader's generator, orders the epochs
        torch.manual_seed(0)
        learner = localearn.create_learner("mf", arch="mlp:1x64", input_shape=(1, 8, 8), num_classes=10)
        result = _fit(learner, _loaders(digits, loader_seed), epochs=4)
        assert result["data"]["source"] == "user DataLoaders"
        accs.append(result["metrics"]["test_accuracy"])
    assert accs[0] == accs[1] and accs[0] > 0.85  # seed 0: 0.88


def test_from_loaders_checks_its_input(digits: localearn.ImageData) -> None:
    train, val, _ = _loaders(digits, 0)
    bundle = from_loaders(train, val)
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert "test = validation" in bundle.info["test"]
    with pytest.raises(ConfigError, match=r"train must be a torch\.utils\.data\.DataLoader, got list"):
        from_loaders([1, 2], val)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="takes a DataBundle"):
        Trainer(localearn.create_learner("mf", arch="mlp:1x8", input_shape=(1, 8, 8)), "digits")  # type: ignore[arg-type]


def test_pyg_graph_feeds_the_trainer() -> None:
    from localearn.data.graphs import karate_club_data

    graph = karate_club_data(0)
    with pytest.raises(ConfigError, match="missing: test_mask"):
        from_pyg(type(graph)(x=graph.x, y=graph.y, edge_index=graph.edge_index, train_mask=graph.train_mask,
                             val_mask=graph.val_mask))
    torch.manual_seed(0)
    learner = localearn.create_learner("fgnn", arch="gcn:32x2", input_shape=(int(graph.x.shape[1]),), num_classes=4)
    result = _fit(learner, graph, epochs=30)
    sizes = [int(m.sum()) for m in (graph.train_mask, graph.val_mask, graph.test_mask)]
    assert result["data"]["source"] == "user PyG Data" and result["data"]["split_sizes"] == sizes
    assert result["metrics"]["test_accuracy"] > 0.45  # seed 0: 0.60; 4 classes, chance 0.25


@pytest.mark.parametrize("algo", ["cafo", "backprop"])
def test_user_blocks_are_the_layers_of_cafo_and_backprop(algo: str, digits: localearn.ImageData) -> None:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Linear(512, 64))]
    learner = localearn.get_algorithm(algo).from_modules(blocks, input_shape=digits.input_shape, num_classes=10)
    owned = {id(m) for m in learner.modules()}
    assert all(id(b) in owned for b in blocks)
    result = _fit(learner, digits, epochs=3)
    assert result["arch"] == "modules:Sequential-Sequential"
    assert result["metrics"]["test_accuracy"] > 0.7  # seed 0: cafo 0.86, backprop 0.80; chance 0.10
