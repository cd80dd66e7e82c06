"""The backprop autoencoder (``--algo backprop --task autoencoder``) is an ordinary Trainer run:
it lowers validation MSE on real MNIST, checkpoints and resumes, and it is CCL's own forward
network (the BP arm of ``studies/ccl_autoencoder_mnist.toml``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.backprop import Backprop
from localearn.algorithms.counter_current import CounterCurrent
from stop_after import StopAfter

import localearn
from localearn import TrainConfig, Trainer, load_dataset
from localearn.data.base import ImageData
from localearn.errors import ConfigError
from localearn.update import UpdatePolicy
from localearn.utils import seed_everything

ARCH = "mlp:784-256-64-256"  # the benchmark's MLP autoencoder


def _small_mnist(shared_data: Path) -> ImageData:
    """600 training, 200 validation and 200 test images of the real MNIST splits."""
    data = load_dataset("mnist", shared_data)
    assert isinstance(data, ImageData)
    return dataclasses.replace(data, x_train=data.x_train[:600], y_train=data.y_train[:600],
                               x_val=data.x_val[:200], y_val=data.y_val[:200],
                               x_test=data.x_test[:200], y_test=data.y_test[:200])


def _trainer(data: ImageData, out: Path, callbacks: Any = ()) -> Trainer:
    seed_everything(0)
    learner = Backprop(ARCH, data.input_shape, 10, task="autoencoder", grad_clip=0.2, warmup_steps=20)
    # the benchmark's recipe (SGD momentum 0.9, weight decay 1e-4, clip 0.2), lr 0.1 for 600 images
    config = TrainConfig(epochs=6, batch_size=16, optimizer="sgd", lr=0.1, weight_decay=1e-4, momentum=0.9,
                         seed=0, device="cpu", progress=False)
    return Trainer(learner, data, config, out_dir=out, callbacks=callbacks)


def test_backprop_autoencoder_lowers_mnist_val_mse_and_resumes(shared_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = _small_mnist(shared_data)
    trainer = _trainer(data, tmp_path / "full")
    untrained = trainer.evaluate("val")["mse"]  # the reference init's decoder output is zero
    full = trainer.fit()
    assert full["status"] == "complete" and full["task"] == "autoencoder"
    val = [h["val_mse"] for h in full["history"]]
    mean_image = F.mse_loss(data.x_train.mean(0, keepdim=True).expand_as(data.x_val), data.x_val).item()
    # measured (seed 0): untrained 0.957, mean image 0.671, epochs 0.847 0.531 0.467 0.422 0.398 0.386
    assert val[-1] < 0.5 * untrained and val[-1] < 0.7 * mean_image, (untrained, mean_image, val)
    assert val == sorted(val, reverse=True)  # every epoch lowered it
    assert full["metrics"]["test_mse"] < 0.7 * mean_image  # measured 0.389

    with pytest.raises(KeyboardInterrupt):
        _trainer(data, tmp_path / "cut", [StopAfter(3)]).fit()
    resumed = _trainer(data, tmp_path / "cut")
    resumed.resume(tmp_path / "cut" / "checkpoint.pt")
    again = resumed.fit()
    assert again["history"] == full["history"]  # the warm-up step count resumed too
    assert again["metrics"]["test_mse"] == full["metrics"]["test_mse"]


@pytest.mark.parametrize("arch", ["mlp:784-64-16-64", "cnn:8-16"])
@pytest.mark.parametrize("init", ["reference", "torch"])
def test_it_is_ccls_forward_network_at_the_same_seed(arch: str, init: str) -> None:
    seed_everything(0)
    ccl = CounterCurrent(arch, (1, 28, 28), 10, mode="autoencoder", init=init).eval()
    seed_everything(0)
    bp = Backprop(arch, (1, 28, 28), 10, task="autoencoder", init=init).eval()
    ccl_maps = [t for pair in ccl.layers[1:] for t in pair.f.state_dict().values()]  # type: ignore[union-attr]
    bp_maps = list(bp.layers[0].state_dict().values())
    assert len(ccl_maps) == len(bp_maps) and all(torch.equal(a, b) for a, b in zip(ccl_maps, bp_maps, strict=True))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(ccl.reconstruct(x), bp.reconstruct(x))


def test_gradient_centralisation_and_clip_apply_before_each_step() -> None:
    seed_everything(0)
    bp = Backprop("mlp:64-32-64", (1, 8, 8), 10, task="autoencoder", init="torch", grad_clip=1e-3,
                  grad_centralization=True)
    seen: list[tuple[float, float]] = []
    opt = bp.configure_optimizers(lambda params: torch.optim.SGD(params, lr=0.0))[0]
    UpdatePolicy(**bp.update_defaults).attach(bp)  # what the Trainer does: its update policy clips
    opt.register_step_pre_hook(lambda o, a, k: seen.append((
        float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in bp.parameters()]))),
        max(float(p.grad.mean(1).abs().max()) for p in bp.parameters() if p.dim() > 1))))
    x = torch.randn(16, 1, 8, 8)
    bp.train_step((x, torch.zeros(16, dtype=torch.long)), bp.stages()[0])
    norm, row_mean = seen[0]
    assert norm == pytest.approx(1e-3, rel=1e-3) and row_mean < 1e-9


@pytest.mark.parametrize("options, message", [
    ({"task": "link"}, "backprop trains task classification or autoencoder, not 'link'"),
    ({"task": "autoencoder", "init": "xavier"}, "init must be one of reference, torch"),
    ({"task": "autoencoder", "arch": "gcn:16x2"}, "backprop autoencoder takes mlp: or cnn: specs"),
    ({"grad_clip": -1.0}, "grad_clip must be >= 0"),
])
def test_bad_options_name_the_problem(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Backprop(**{"arch": "mlp:2x16", "input_shape": (1, 8, 8), **options})


def test_the_autoencoder_has_no_class_scores() -> None:
    bp = Backprop("mlp:2x16", (1, 8, 8), 10, task="autoencoder")
    with pytest.raises(ConfigError, match="no class scores; use reconstruct"):
        bp.predict(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="needs task='autoencoder'"):
        Backprop("mlp:2x16", (1, 8, 8), 10).reconstruct(torch.zeros(2, 1, 8, 8))


def test_task_autoencoder_reaches_backprop_through_fit() -> None:
    """What ``localearn train --algo backprop --task autoencoder`` calls: the task is accepted and scored."""
    r = localearn.fit("backprop", "digits", task="autoencoder", arch="mlp:64-32-64", epochs=2, optimizer="sgd",
                      lr=0.05, seed=0, progress=False, device="cpu")
    assert r["status"] == "complete" and r["task"] == "autoencoder"
    assert r["metrics"]["test_mse"] > 0 and r["metrics"]["test_accuracy"] is None
    assert r["learner_options_resolved"]["task"] == "autoencoder"
