"""Small-image stems for ImageNet models, the usual adaptation for CIFAR-sized inputs.

An ImageNet stem divides the input by 4 before the first stage (ResNet: a 7×7 stride-2 conv and a
stride-2 max-pool), which leaves a 32×32 image at 8×8 after the stem and 1×1 before the classifier.
The CIFAR variant used since He et al. ("Deep Residual Learning for Image Recognition", CVPR 2016,
Sec. 4.2: a 3×3 first conv, no pooling) keeps the full resolution. What changes, per family, when
the input is at most 64×64 (or ``stem="cifar"``; ``stem="imagenet"`` changes nothing):

- ResNet, ResNeXt, Wide ResNet (any model with a 7×7 ``conv1`` and a ``maxpool``, timm's too):
  ``conv1`` becomes a fresh 3×3 stride-1 conv with padding 1, ``maxpool`` an ``nn.Identity``.
- Other CNNs whose first conv is strided with "same" padding (odd kernel k, padding k//2):
  MobileNet V2/V3, EfficientNet, RegNet, MNASNet, DenseNet, ShuffleNet V2, GoogLeNet: that conv's
  stride becomes 1 (kernel and weights kept); when it was changed, a max-pool registered before the
  second conv (DenseNet's ``pool0``, ShuffleNet's and GoogLeNet's ``maxpool``) becomes Identity.
- Untouched, with no clean rule: patchify stems (ConvNeXt, Swin: kernel = stride, no padding; a
  stride of 1 would multiply the token count by 16), SqueezeNet and Inception V3 (unpadded strided
  first conv), VGG (its first conv already has stride 1; its pools are the stages).
- torchvision ViTs are built with ``patch_size=4`` instead (in :mod:`localearn.models.sources`).

Independently of the stem, a first conv whose input channels differ from the data's (MNIST's 1
against 3) is replaced by one with the data's channel count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import nn

from localearn.errors import ConfigError

SMALL = 64
STEMS = ("auto", "cifar", "imagenet")


def adapt_stem(model: nn.Module, input_shape: Sequence[int], stem: str = "auto") -> list[str]:
    """Change ``model`` in place for ``input_shape`` (see the module docstring); returns what changed,
    one sentence per change."""
    if stem not in STEMS:
        raise ConfigError(f"stem={stem!r}: expected one of {', '.join(STEMS)}")
    if len(input_shape) != 3:
        return []
    changes = _channels(model, int(input_shape[0]))
    small = max(int(s) for s in input_shape[1:]) <= SMALL
    if stem == "imagenet" or (stem == "auto" and not small):
        return changes
    conv1, maxpool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (7, 7) and isinstance(maxpool, nn.MaxPool2d):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1,
                                bias=conv1.bias is not None)
        model.maxpool = nn.Identity()
        return [*changes, "conv1: 7x7 stride 2 -> 3x3 stride 1 padding 1", "maxpool -> Identity"]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return changes
    name, first = convs[0]
    k, s, p = first.kernel_size, first.stride, first.padding
    same = isinstance(p, tuple) and all(ki % 2 == 1 and pi == ki // 2 for ki, pi in zip(k, p, strict=True))
    if s == (1, 1) or not same:
        return changes
    first.stride = (1, 1)
    changes.append(f"{name}: stride {s[0]} -> 1")
    second = convs[1][0] if len(convs) > 1 else None
    for n, m in model.named_modules():
        if n == second:
            break
        if isinstance(m, nn.MaxPool2d):
            _replace(model, n, nn.Identity())
            changes.append(f"{n} -> Identity")
            break
    return changes


def _channels(model: nn.Module, channels: int) -> list[str]:
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels == channels:
        return []
    name, conv = first
    if conv.groups != 1:
        return []
    pair = tuple[int, int]
    _replace(model, name, nn.Conv2d(channels, conv.out_channels, cast(pair, conv.kernel_size),
                                    stride=cast(pair, conv.stride), padding=cast(pair, conv.padding),
                                    dilation=cast(pair, conv.dilation), bias=conv.bias is not None,
                                    padding_mode=conv.padding_mode))
    return [f"{name}: {conv.in_channels} -> {channels} input channels"]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
