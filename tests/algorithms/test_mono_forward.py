"""Mono-Forward: the local gradients of docs/learners/mono_forward.md#equations, schedules,
prediction, memory, accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import localearn
from localearn import create_learner
from localearn.layer import Context
from localearn.measure import SavedTensorMeter
from localearn.trainer import make_optimizer_factory


def test_local_gradients_match_the_closed_form() -> None:
    torch.manual_seed(0)
    mf = create_learner("mf", arch="mlp:2x16", input_shape=(1, 4, 4), num_classes=5)
    layer = mf.layers[1]
    a_prev = torch.relu(torch.randn(8, 16))
    y = torch.randint(0, 5, (8,))
    _, loss = layer.forward_loss(a_prev, Context(y=y, num_classes=5))
    loss.backward()
    lin = layer.body[0]
    z = a_prev @ lin.weight.T + lin.bias
    a = torch.relu(z)
    M = layer.proj.weight
    P = torch.softmax(a @ M.T, dim=1)
    Y = F.one_hot(y, 5).float()
    dM = (P - Y).T @ a / 8
    dz = ((P - Y) @ M) * (z > 0).float()
    torch.testing.assert_close(layer.proj.weight.grad, dM)
    torch.testing.assert_close(lin.weight.grad, dz.T @ a_prev / 8)
    torch.testing.assert_close(lin.bias.grad, dz.sum(0) / 8)


def test_initialisation_follows_beyond_bp() -> None:
    mf = create_learner("mf", arch="mlp:1x300", input_shape=(1, 28, 28), num_classes=10)
    lin, proj = mf.layers[0].body[1], mf.layers[0].proj
    assert float(lin.weight.detach().abs().max()) <= (6 / 784) ** 0.5 + 1e-6
    assert float(lin.bias.detach().abs().max()) == 0.0
    assert proj.bias is None
    assert float(proj.weight.detach().abs().max()) <= 1 / 300**0.5 + 1e-6


def test_prediction_rules_and_input_head() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 1, 8, 8)
    last = create_learner("mf", arch="mlp:2x16", input_shape=(1, 8, 8), prediction="last")
    summed = create_learner("mf", arch="mlp:2x16", input_shape=(1, 8, 8), prediction="sum")
    summed.load_state_dict(last.state_dict())
    g = list(last.layer_scores(x).values())
    torch.testing.assert_close(last.predict(x), g[-1])
    torch.testing.assert_close(summed.predict(x), g[0] + g[1])
    m0 = create_learner("mf", arch="mlp:2x16", input_shape=(1, 8, 8), input_head=True)
    assert [s.name for s in m0.stages()] == ["layer0", "layer1", "layer2"]
    assert m0.predict(x).shape == (6, 10) and list(m0.layer_scores(x)) == ["layer0", "layer1", "layer2"]


def test_greedy_stage_trains_only_its_layer() -> None:
    mf = create_learner("mf", arch="mlp:2x16", input_shape=(1, 8, 8))
    mf.configure_optimizers(make_optimizer_factory("adam", 1e-2, 0.0))
    before = [p.detach().clone() for p in mf.layers[0].parameters()]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    stage1 = mf.stages()[1]
    mf.start_epoch(stage1, 1, 1)
    mf.train_step((x, y), stage1)
    assert all(torch.equal(b, p) for b, p in zip(before, mf.layers[0].parameters(), strict=True))


def test_cnn_spec_trains_on_digits() -> None:
    r = localearn.fit("mf", "digits", arch="cnn:16-32", epochs=8, progress=False, seed=0)
    assert r["metrics"]["test_accuracy"] >= 0.9


def _saved_peak(name: str, arch: str, shape: tuple[int, ...], batch: int = 128) -> tuple[int, dict[str, int]]:
    learner = create_learner(name, arch=arch, input_shape=shape, num_classes=10)
    learner.configure_optimizers(make_optimizer_factory("adam", 1e-3, 0.0))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    with SavedTensorMeter(list(learner.parameters())) as meter:
        for stage in learner.stages():
            learner.start_epoch(stage, 1, 1)
            learner.train_step((x, y), stage)
    return meter.peak_bytes, meter.per_layer


def test_saved_bytes_hold_one_layer_not_the_network() -> None:
    """mlp:4x1000 on MNIST-shaped input, batch 128: MF holds one layer's input and output.

    Exact gradients need the layer input (for dW) and its ReLU output (for dM and the mask), so
    MF's floor is (D_in + D) / (784 + 4·D) of backprop's activations: 2000/4784 = 0.418.
    """
    mf, per_layer = _saved_peak("mf", "mlp:4x1000", (1, 28, 28))
    bp, _ = _saved_peak("bp", "mlp:4x1000", (1, 28, 28))
    unit = 128 * 1000 * 4
    assert per_layer["layer1"] == pytest.approx(2 * unit, rel=0.02)
    assert bp == pytest.approx(128 * 784 * 4 + 4 * unit, rel=0.02)
    assert mf / bp == pytest.approx(2000 / 4784, rel=0.02)
    # Flat in depth for MF, growing for backprop.
    mf8, _ = _saved_peak("mf", "mlp:8x1000", (1, 28, 28))
    bp8, _ = _saved_peak("bp", "mlp:8x1000", (1, 28, 28))
    assert mf8 == mf and bp8 > 1.7 * bp


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["mono_forward", "backprop"])
def test_mnist_2x1000_five_epochs(algo: str, shared_data: Path) -> None:
    """Issue acceptance: MNIST, mlp:2x1000, 5 epochs, batch 128, CPU, seed 0 -> >= 0.975."""
    r = localearn.fit(algo, "mnist", arch="mlp:2x1000", data_dir=shared_data, epochs=5, batch_size=128,
                      seed=0, device="cpu", progress=False)
    assert r["metrics"]["test_accuracy"] >= 0.975
