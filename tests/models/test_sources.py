"""Model sources (issue #19, item 1): torchvision and timm by name with the CIFAR stem on small
images, a user's own factory, and one clear error for each way a source can be wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

from localearn.errors import ConfigError
from localearn.models import adapt_stem, load_model

TINY_VIT = {"num_layers": 2, "hidden_dim": 32, "mlp_dim": 64, "num_heads": 2}

USER_CODE = '''
import torch
from torch import nn

def small_cnn(num_classes, width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))

def mlp(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.Size(input_shape).numel()), num_classes))

def fixed_ten():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

def wrong_width(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(5, num_classes))

def not_a_model(num_classes):
    return 3

NOT_CALLABLE = 3
'''


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "anynet_user_models.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "anynet_user_models", raising=False)
    return "anynet_user_models"


def test_resnet_gets_the_cifar_stem_on_small_images_unless_asked() -> None:
    model = load_model("torchvision:resnet18", 10, (3, 32, 32))
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    imagenet = load_model("torchvision:resnet18", 10, (3, 32, 32), {"stem": "imagenet"})
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    large = load_model("torchvision:resnet18", 7, (3, 96, 96))
    assert large.conv1.stride == (2, 2) and large(torch.zeros(1, 3, 96, 96)).shape == (1, 7)


def test_other_families_get_the_generic_stem_change() -> None:
    mobilenet = load_model("torchvision:mobilenet_v2", 10, (3, 32, 32), {"width_mult": 0.25})
    assert mobilenet.features[0][0].stride == (1, 1)  # the first strided conv, nothing else
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in mobilenet.modules()) == 4
    densenet = nn.Sequential()
    densenet.conv0, densenet.pool0 = nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, 1)
    densenet.conv1 = nn.Conv2d(8, 8, 3, padding=1)
    assert adapt_stem(densenet, (3, 32, 32)) == ["conv0: stride 2 -> 1", "pool0 -> Identity"]
    patchify = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.MaxPool2d(2))  # ConvNeXt-like: no clean rule
    assert adapt_stem(patchify, (3, 32, 32)) == [] and patchify[0].stride == (4, 4)


def test_first_conv_takes_the_data_channels() -> None:
    model = load_model("torchvision:resnet18", 10, (1, 28, 28))
    assert model.conv1.in_channels == 1 and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_vit_is_built_for_the_image_size() -> None:
    vit = load_model("torchvision:vit_b_16", 10, (3, 32, 32), TINY_VIT)
    assert isinstance(vit, VisionTransformer) and vit.image_size == 32 and vit.patch_size == 4
    assert vit.hidden_dim == 32 and len(vit.encoder.layers) == 2
    assert load_model("torchvision:vit_b_16", 10, (3, 32, 32), {**TINY_VIT, "stem": "imagenet"}).patch_size == 16


def test_user_factory_gets_classes_shape_and_options(user_module: str) -> None:
    cnn = load_model(f"{user_module}:small_cnn", 4, (3, 8, 8), {"width": 5})
    assert cnn[0].out_channels == 5 and cnn(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    assert load_model(f"{user_module}:mlp", 3, (2, 4, 4))[1].in_features == 32
    assert isinstance(load_model(f"{user_module}:fixed_ten", 10, (3, 8, 8)), nn.Sequential)


@pytest.mark.parametrize(("source", "message"), [
    ("resnet18", r"model 'resnet18': expected torchvision:NAME, timm:NAME or package\.module:factory"),
    ("torchvision:resnet19", r"torchvision has no classification model 'resnet19'; did you mean resnet18"),
    ("no_such_pkg.models:net", r"cannot import module 'no_such_pkg\.models' \(ModuleNotFoundError"),
    ("{mod}:smal_cnn", r"module 'anynet_user_models' has no attribute 'smal_cnn'; did you mean small_cnn"),
    ("{mod}:NOT_CALLABLE", r"'NOT_CALLABLE' is a int, not a callable that builds a model"),
    ("{mod}:not_a_model", r"the factory returned a int, not a torch\.nn\.Module"),
    ("{mod}:wrong_width", r"fails on input shape \(3, 8, 8\): RuntimeError: mat1 and mat2 shapes"),
    ("{mod}:fixed_ten", r"returns \(2, 10\) for a batch of 2 inputs of shape \(3, 8, 8\); expected \(2, 4\)"),
])
def test_each_bad_source_is_one_clear_error(source: str, message: str, user_module: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(source.format(mod=user_module), 4, (3, 8, 8))


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"cannot be built with options .*depth=3.*unexpected keyword argument"):
        load_model("torchvision:resnet18", 10, (3, 32, 32), {"depth": 3})
    with pytest.raises(ConfigError, match=r"stem='cifar10': expected one of auto, cifar, imagenet"):
        load_model("torchvision:resnet18", 10, (3, 32, 32), {"stem": "cifar10"})
    with pytest.raises(ConfigError, match=r"needs image inputs \(channels, height, width\), not shape \(64,\)"):
        load_model("torchvision:resnet18", 10, (64,))


def test_timm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"timm:resnet18 needs timm, .*pip install 'localearn\[timm\]'"):
        load_model("timm:resnet18", 10, (3, 32, 32))


def test_timm_models_by_name() -> None:
    pytest.importorskip("timm")
    model = load_model("timm:resnet18", 10, (1, 32, 32))
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (3, 3)
    assert isinstance(model.maxpool, nn.Identity)
    with pytest.raises(ConfigError, match=r"timm has no model 'resnet_18'"):
        load_model("timm:resnet_18", 10, (3, 32, 32))
