"""DGL, InfoPro and AugLocal (issue #19, item 3): each loss against a hand computation, AugLocal's
picks and depths against the rules in docs/learners/dgl.md#skeleton, the model's own head as the last
block's head, frozen blocks in eval mode under the greedy schedule, and training on real data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.supervised_local import aux_depths, aux_picks, fresh_copy, interpolated
from torch import nn

import localearn
from localearn import create_learner
from localearn.learner import Stage
from localearn.models import cut_model, load_model


def digits(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 8 - 1, torch.tensor(d.target[:n])


def test_infopro_loss_is_weighted_reconstruction_plus_task() -> None:
    torch.manual_seed(0)
    learner = create_learner("infopro", arch="cnn:4-8-8", input_shape=(1, 8, 8), num_classes=10)
    x, y = digits()
    ctx = learner.make_context((x, y))
    block = learner.layers[1]
    h = block(learner.layers[0](x))
    # λ over K = 3 modules (local modules 0 and 1): rec 5 -> 0.2, task 0.05 -> 0.5, r = k / (K - 2)
    assert (block.rec_weight, block.task_weight) == pytest.approx((0.2, 0.5))
    assert (learner.layers[0].rec_weight, learner.layers[0].task_weight) == pytest.approx((5.0, 0.05))
    assert learner.layers[2].decoder is None and learner.layers[2].rec_weight == 0  # the last: plain CE
    lo = x.amin(dim=(2, 3), keepdim=True)
    target = (x - lo) / (x.amax(dim=(2, 3), keepdim=True) - lo)  # each image's channel to [0, 1]
    rec = F.binary_cross_entropy(block.decoder(h), target)
    assert block.decoder(h).shape == x.shape
    task = F.cross_entropy(block.aux(h), y)
    torch.testing.assert_close(block.local_loss(h, ctx), 0.2 * rec + 0.5 * task)
    assert interpolated(6.0, 1.0, 1, 4) == pytest.approx(3.5) and interpolated(5.0, 0.0, 0, 2) == 5.0


def test_auglocal_picks_and_depths_follow_the_released_rule() -> None:
    assert aux_picks(0, 3, 55) == [18, 36, 54] and aux_picks(1, 3, 55) == [19, 36, 54]  # ResNet-110, d = 3
    assert aux_picks(0, 2, 4) == [2, 3]  # round(1.5) = 2 (halves to even), the last layer always last
    assert aux_picks(2, 2, 4) == [3] and aux_picks(1, 5, 4) == [2, 3]  # every later layer when d >= L-1-l
    assert aux_depths(3, 10)[0] == 3 and aux_depths(3, 10)[-1] == 2  # 3 -> 2 (tau = 0.5)
    assert aux_depths(5, 6) == [5, 4, 4, 4, 3] and set(aux_depths(2, 8)) == {2}  # round(1.5) = 2
    assert aux_depths(4, 2) == [4]


def test_auglocal_auxiliary_networks_are_fresh_copies_of_later_blocks() -> None:
    torch.manual_seed(0)
    model = load_model("torchvision:resnet18", 10, (3, 32, 32))
    learner = localearn.localize(model, "auglocal", input_shape=(3, 32, 32), blocks=["layer1", "layer2", "layer3"],
                                 aug_depth=2)
    blocks = [layer.body for layer in learner.local_layers]
    aux0 = learner.layers[0].aux  # picks [2, 3]: an adapter (64x32x32 -> layer3's 128x16x16 input), copies
    assert isinstance(aux0[0][0], nn.Conv2d) and aux0[0][0].stride == (2, 2) and aux0[0][0].out_channels == 128
    own = {id(p) for p in model.parameters()}
    assert not any(id(p) in own for p in aux0.parameters())  # copies, never the model's own weights
    copy_of_layer3 = aux0[1]
    assert [tuple(p.shape) for p in copy_of_layer3.parameters()] == [tuple(p.shape) for p in blocks[2].parameters()]
    assert not torch.equal(next(copy_of_layer3.parameters()), next(blocks[2].parameters()))  # re-drawn
    assert not any(isinstance(m, nn.Linear) and m.out_features == 10 for m in aux0[2].modules())  # no model fc
    assert learner.layers[3].aux is None  # the model's own head
    x = torch.randn(2, 3, 32, 32)
    learner.eval()
    with torch.no_grad():
        assert learner.layer_scores(x)["layer0"].shape == (2, 10)
    twin = fresh_copy(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    assert twin[1].running_mean.abs().sum() == 0


def test_dgl_uses_the_models_own_head_and_trains_it() -> None:
    torch.manual_seed(0)
    model = load_model("torchvision:resnet18", 10, (1, 8, 8))
    learner = localearn.localize(model, "dgl", input_shape=(1, 8, 8), blocks=3)
    assert learner.layers[-1].aux is None and learner.num_classes == 10  # read off the model's output
    assert [type(layer.aux[1]).__name__ for layer in learner.local_layers[:-1]] == ["Conv2d"] * 2  # MLP-SR
    x, y = digits()
    learner.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(learner.predict(x), model(x))  # the model's logits, nothing on top
    ctx = learner.make_context((x, y))
    learner.train()
    h = learner.layers[0](x)
    torch.testing.assert_close(learner.layers[0].local_loss(h, ctx), F.cross_entropy(learner.layers[0].aux(h), y))
    learner.configure_optimizers(lambda p: torch.optim.SGD(p, lr=0.1))
    fc = model.fc.weight.detach().clone()
    learner.train_step((x, y), learner.stages()[0])
    assert not torch.equal(fc, model.fc.weight)  # the model's own classifier is the last block's head


def test_greedy_units_keep_frozen_blocks_in_eval_mode() -> None:
    torch.manual_seed(0)
    learner = create_learner("dgl", arch="cnn:4-8", input_shape=(1, 8, 8), schedule="greedy")
    learner.configure_optimizers(lambda p: torch.optim.SGD(p, lr=0.1))
    assert [s.name for s in learner.stages()] == ["layer0", "layer1"]
    stats = learner.layers[0].body[3].running_mean.clone()
    learner.start_epoch(Stage("layer1", (1,)), 1, 1)
    assert not learner.layers[0].training and learner.layers[1].training
    learner.train_step(digits(), Stage("layer1", (1,)))
    torch.testing.assert_close(learner.layers[0].body[3].running_mean, stats)  # no BN drift in a frozen block


@pytest.mark.parametrize("algo", ["dgl", "infopro", "auglocal"])
def test_learners_learn_digits(algo: str) -> None:
    """Seed 0, cnn:32-64, 5 epochs on the bundled digits with the default recipe: 0.967 (DGL), 0.986
    (InfoPro), 0.969 (AugLocal); chance 0.10."""
    torch.set_num_threads(1)
    res = localearn.fit(algo, "digits", arch="cnn:32-64", epochs=5, seed=0, progress=False, device="cpu")
    assert res["metrics"]["test_accuracy"] > 0.93


def test_cut_blocks_chain_to_the_model_in_the_learner() -> None:
    torch.manual_seed(0)
    model = load_model("torchvision:resnet18", 10, (3, 32, 32))
    cut = cut_model(model, 4, (3, 32, 32))
    learner = localearn.localize(model, "infopro", input_shape=(3, 32, 32))
    assert [layer.body.code for layer in learner.local_layers] == [b.code for b in cut.blocks]
    assert [layer.block_info["modules"] for layer in learner.local_layers] == [", ".join(n) for n in cut.names]
