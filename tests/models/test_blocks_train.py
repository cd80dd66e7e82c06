"""Cut blocks are a learner's trunk (issue #19): ``localize`` trains a torchvision ResNet-18 block by
block under Mono-Forward, the training lands in the model's own parameters, and the last block keeps
the model's own head (no projection on top of its logits)."""

from __future__ import annotations

import pytest
import torch
from localearn.algorithms.mono_forward import MonoForward

import localearn
from localearn import TrainConfig, Trainer
from localearn.models import cut_model, load_model


def test_resnet_blocks_train_under_mono_forward() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = localearn.load_dataset("digits")
    assert isinstance(data, localearn.ImageData)
    model = load_model("torchvision:resnet18", 10, data.input_shape)  # 1 channel, CIFAR stem, 8x8 images
    cut = cut_model(model, 3, data.input_shape)
    before = [p.detach().clone() for p in model.parameters()]
    learner = localearn.localize(model, "mono_forward", input_shape=data.input_shape, blocks=3)
    assert isinstance(learner, MonoForward) and learner.num_classes == 10
    assert [layer.body.code for layer in learner.layers] == [block.code for block in cut.blocks]
    assert isinstance(learner.layers[-1].proj, torch.nn.Identity)
    result = Trainer(learner, data, TrainConfig(epochs=2, progress=False, seed=0, device="cpu")).fit()
    assert result["metrics"]["test_accuracy"] > 0.85  # seed 0: 0.92 (chance 0.10)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) == len(changed)  # every parameter of the model itself was trained


def test_timm_vit_is_cut_between_its_blocks() -> None:
    pytest.importorskip("timm")
    torch.manual_seed(0)
    opts = {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 2}
    vit = load_model("timm:vit_tiny_patch16_224", 10, (3, 32, 32), opts).eval()
    cut = cut_model(vit, 4, (3, 32, 32))  # forward(x, attn_mask=None, is_causal=False): defaults fixed
    assert cut.points == ("blocks.0", "blocks.1", "blocks.2") and cut.shapes[0] == (65, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = x
        for block in cut.blocks:
            h = block(h)
        assert torch.allclose(h, vit(x), atol=1e-5)
