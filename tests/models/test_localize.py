"""Learners over any network (issue #19, items 1, 2 and 4): ``localize`` on model families the issue
does not name (ShuffleNet, a ViT) from Python and the CLI, Mono-Forward's projections and CaFo's
predictors chosen by feature shape with the model's own head last, and the backprop twin that
trains the unmodified model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import localearn
from localearn import TrainConfig, Trainer
from localearn.cli import main
from localearn.errors import ConfigError
from localearn.models import load_model

VIT = {"num_layers": 3, "hidden_dim": 32, "mlp_dim": 64, "num_heads": 2}


def quick(learner: localearn.LocalLearner, epochs: int = 2) -> dict:
    torch.set_num_threads(1)
    data = localearn.load_dataset("digits")
    return Trainer(learner, data, TrainConfig(epochs=epochs, batch_size=64, progress=False, seed=0, device="cpu",
                                              optimizer="adam", lr=2e-3)).fit()


def test_localize_a_shufflenet_object_trains_the_model_itself() -> None:
    torch.manual_seed(0)
    model = load_model("torchvision:shufflenet_v2_x0_5", 10, (1, 8, 8))
    learner = localearn.localize(model, "infopro", input_shape=(1, 8, 8), blocks=3)
    assert str(learner.arch) == "model:object:ShuffleNetV2 blocks=3 balance=activations"
    before = model.fc.weight.detach().clone()
    res = quick(learner, epochs=3)
    assert res["metrics"]["test_accuracy"] > 0.8  # seed 0: 0.91 (chance 0.10)
    assert not torch.equal(before, model.fc.weight)
    assert res["metrics"]["per_layer"]["layer2"]["modules"].endswith("conv5, fc")


def test_localize_a_vit_with_token_heads() -> None:
    torch.manual_seed(0)
    learner = localearn.localize("torchvision:vit_b_16", "mono_forward", input_shape=(1, 8, 8), num_classes=10,
                                 blocks=3, model_options=VIT, schedule="joint")
    heads = [layer.proj for layer in learner.local_layers]
    assert str(heads[0][0]) == "TokenPool(mean)" and isinstance(heads[-1], nn.Identity)  # auto; the ViT's own head
    assert learner.layers[0].block_info["output_shape"] == [5, 32]  # 2x2 patches of 4 and a class token
    res = quick(learner, epochs=3)
    assert res["metrics"]["test_accuracy"] > 0.6  # seed 0: 0.75


def test_mono_forward_and_cafo_heads_fit_the_features() -> None:
    torch.manual_seed(0)
    mf = localearn.localize("torchvision:resnet18", "mf", input_shape=(3, 32, 32), num_classes=10, blocks=2)
    assert isinstance(mf.layers[0].proj[0], nn.AdaptiveAvgPool2d) and mf.layers[0].proj[-1].in_features == 64
    assert isinstance(mf.layers[1].proj, nn.Identity)  # no projection on top of the model's logits
    conv = localearn.localize("torchvision:resnet18", "mf", input_shape=(3, 32, 32), num_classes=10, blocks=2,
                              head="conv")
    assert isinstance(conv.layers[0].proj[0], nn.Conv2d)
    plain = localearn.create_learner("mf", arch="cnn:8-16", input_shape=(1, 8, 8))
    assert isinstance(plain.layers[0].proj, nn.Linear) and plain.layers[0].proj.in_features == 8 * 4 * 4  # paper's
    cafo = localearn.localize("torchvision:resnet18", "cafo", input_shape=(3, 32, 32), num_classes=10, blocks=2)
    first, last = cafo.predictors
    assert isinstance(first.linear[0], nn.AdaptiveAvgPool2d)
    assert [n for n, _ in last.linear.named_children()] == ["avgpool", "fc"]  # the model's own head
    assert cafo.blocks[-1].block_info["output_shape"] == [512, 4, 4]
    with pytest.raises(ConfigError, match=r"predictor_loss=mse solves a linear predictor"):
        localearn.localize("torchvision:resnet18", "cafo", input_shape=(3, 32, 32), num_classes=10,
                           predictor_loss="mse")


def test_backprop_trains_the_unmodified_model(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    res = localearn.fit("backprop", "digits", model="torchvision:resnet18", blocks=3, epochs=2, seed=0,
                        progress=False, device="cpu", out=tmp_path / "bp")
    assert res["arch"] == "model:torchvision:resnet18 blocks=3 balance=activations"
    assert list(res["metrics"]["per_layer"]) == ["layer0"]  # one layer: the whole model
    learner, _, ckpt = localearn.load_run(tmp_path / "bp")
    assert type(learner.layers[0].model).__name__ == "ResNet"  # the model itself, not cut
    model = load_model("torchvision:resnet18", 10, (1, 8, 8))
    assert {k.removeprefix("layers.0.model.") for k in ckpt["model"]} == set(model.state_dict())
    assert res["metrics"]["test_accuracy"] > 0.9  # seed 0: 0.97 (chance 0.10)


def test_cli_trains_and_evaluates_a_model_not_named_by_the_issue(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "vit"
    opts = [f"--model-opt={k}={v}" for k, v in VIT.items()]
    assert main(["train", "--algo", "dgl", "--model", "torchvision:vit_b_16", "--blocks", "3", *opts,
                 "--dataset", "digits", "--epochs", "8", "--optimizer", "adam", "--lr", "2e-3", "--no-progress",
                 "--out", str(out), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["learner_options"]["arch"].startswith("model:torchvision:vit_b_16 blocks=3 balance=activations")
    assert main(["eval", str(out), "--json"]) == 0  # a zoo name is rebuilt from the installed library
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(run["metrics"]["test_accuracy"])
    assert main(["train", "--resume", "--out", str(out), "--no-progress", "--json"]) == 0  # and resumed
    assert json.loads(capsys.readouterr().out)["metrics"]["test_accuracy"] == run["metrics"]["test_accuracy"]
    assert run["metrics"]["test_accuracy"] > 0.7  # seed 0: 0.84 (its first block's MLP head: 0.94)


def test_localize_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"localize\('torchvision:resnet18'\) builds the model: give num_classes"):
        localearn.localize("torchvision:resnet18", input_shape=(3, 32, 32))
    with pytest.raises(ConfigError, match=r"localize takes a model instead of an arch spec"):
        localearn.localize("torchvision:resnet18", input_shape=(3, 32, 32), num_classes=10, arch="mlp:2x8")
    with pytest.raises(ConfigError, match=r"dgl has no option 'aug_depth'"):
        localearn.localize(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(4,), aug_depth=2)
    with pytest.raises(ConfigError, match=r"returns \(2, 1\) for 2 inputs; localize needs class scores"):
        localearn.localize(nn.Linear(4, 1), input_shape=(4,))
