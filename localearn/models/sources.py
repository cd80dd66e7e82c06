"""Bring a model: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``.

The model zoos are torchvision's classification models (``torchvision.models.get_model``, the
TorchVision maintainers, 2016-) and timm (Wightman, "PyTorch Image Models", 2019-), always built
with random weights (nothing is downloaded). torchvision's ViTs (Dosovitskiy et al., "An Image is
Worth 16x16 Words", ICLR 2021) are built as ``VisionTransformer(image_size=H, patch_size=4, ...)``
at the named variant's width and depth (patch 4 on small images, the ViT form of the CIFAR stem).
Other ``options`` go to the model's constructor (``--model-opt num_layers=6``).

Small-image stems follow He et al.'s CIFAR ResNets ("Deep Residual Learning for Image
Recognition", CVPR 2016, Sec. 4.2). An ImageNet stem divides the input by 4 before the first stage
(ResNet: a 7×7 stride-2 conv and a stride-2 max-pool), which leaves a 32×32 image at 8×8 after the
stem and 1×1 before the classifier; the CIFAR variant (a 3×3 first conv, no pooling) keeps the
full resolution. What :func:`adapt_stem` changes, per family, when the input is at most 64×64 (or
``stem="cifar"``; ``stem="imagenet"`` changes nothing):

- ResNet, ResNeXt, Wide ResNet (any model with a 7×7 ``conv1`` and a ``maxpool``, timm's too):
  ``conv1`` becomes a fresh 3×3 stride-1 conv with padding 1, ``maxpool`` an ``nn.Identity``.
- Other CNNs whose first conv is strided with "same" padding (odd kernel k, padding k//2):
  MobileNet V2/V3, EfficientNet, RegNet, MNASNet, DenseNet, ShuffleNet V2, GoogLeNet: that conv's
  stride becomes 1 (kernel and weights kept); when it was changed, a max-pool registered before the
  second conv (DenseNet's ``pool0``, ShuffleNet's and GoogLeNet's ``maxpool``) becomes Identity.
- Untouched, with no clean rule: patchify stems (ConvNeXt, Swin: kernel = stride, no padding; a
  stride of 1 would multiply the token count by 16), SqueezeNet and Inception V3 (unpadded strided
  first conv), VGG (its first conv already has stride 1; its pools are the stages).

Independently of the stem, a first conv whose input channels differ from the data's (MNIST's 1
against 3) is replaced by one with the data's channel count.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from localearn.errors import ConfigError

log = logging.getLogger(__name__)
SMALL = 64
STEMS = ("auto", "cifar", "imagenet")
FORMS = "torchvision:NAME, timm:NAME or package.module:factory"
# torchvision's ViT variants: patch size, layers, heads, hidden width, MLP width (torchvision.models.vit_*).
VITS = {"vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
        "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096),
        "vit_h_14": (14, 32, 16, 1280, 5120)}
# Constructor options that would load weights (a download or a file read): a model is built with
# random weights, and a run directory's stored options must never make a zoo read a file (issue #23 S1).
WEIGHT_OPTIONS = ("weights", "weights_backbone", "pretrained", "checkpoint_path", "pretrained_cfg",
                  "pretrained_cfg_overlay", "cache_dir", "pretrained_strict")


def load_model(source: str, num_classes: int, input_shape: Sequence[int],
               options: Mapping[str, Any] | None = None) -> nn.Module:
    """The model ``source`` names, for ``num_classes`` classes and inputs of ``input_shape`` (one
    sample's shape), checked by one forward pass; ``options`` go to its constructor, except
    ``stem`` (``auto``, ``cifar`` or ``imagenet``, for torchvision and timm models)."""
    opts = dict(options or {})
    shape = tuple(int(s) for s in input_shape)
    kind, sep, name = source.partition(":")
    if not sep or not kind or not name:
        raise ConfigError(f"model {source!r}: expected {FORMS}")
    if kind in ("torchvision", "timm"):
        loading = sorted(set(opts) & set(WEIGHT_OPTIONS))
        if loading:
            raise ConfigError(f"model {source}: option {loading[0]} would load weights; localearn builds models "
                              "with random weights (load yours into the model and pass it to localize)")
        stem = str(opts.pop("stem", "auto"))
        if stem not in STEMS:
            raise ConfigError(f"model option stem={stem!r}: expected one of {', '.join(STEMS)}")
        if len(shape) != 3:
            raise ConfigError(f"{source} needs image inputs (channels, height, width), not shape {shape}")
        build = _torchvision if kind == "torchvision" else _timm
        model = build(name, num_classes, shape, opts, stem)
        for change in adapt_stem(model, shape, stem):
            log.info("%s stem: %s", source, change)
    else:
        model = _factory(kind, name, num_classes, shape, opts)
    check_model(model, source, num_classes, shape)
    return model


def _torchvision(name: str, num_classes: int, shape: tuple[int, ...], opts: dict[str, Any], stem: str) -> nn.Module:
    import torchvision  # on first use: a learner over mlp:/cnn: specs never imports it
    from torchvision.models import VisionTransformer

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ConfigError(f"torchvision has no classification model {name!r}{_close(name, names)}")
    if name in VITS:
        patch, layers, heads, hidden, mlp = VITS[name]
        small = stem == "cifar" or (stem == "auto" and max(shape[1:]) <= SMALL)
        if shape[1] != shape[2]:
            raise ConfigError(f"torchvision:{name} needs square images, not {shape[1]}x{shape[2]}")
        kwargs: dict[str, Any] = {"image_size": shape[1], "patch_size": 4 if small else patch, "num_layers": layers,
                                  "num_heads": heads, "hidden_dim": hidden, "mlp_dim": mlp, **opts}
        return _call(VisionTransformer, f"torchvision:{name}", num_classes=num_classes, **kwargs)
    return _call(torchvision.models.get_model, f"torchvision:{name}", name, weights=None,
                 num_classes=num_classes, **opts)


def _timm(name: str, num_classes: int, shape: tuple[int, ...], opts: dict[str, Any], stem: str) -> nn.Module:
    try:
        import timm  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ConfigError(f"timm:{name} needs timm, which is not installed: pip install 'localearn[timm]'") from None
    if not timm.is_model(name):
        raise ConfigError(f"timm has no model {name!r}{_close(name, timm.list_models())}")
    return _call(timm.create_model, f"timm:{name}", name, pretrained=False, num_classes=num_classes,
                 **{"in_chans": shape[0], **opts})


def _factory(module: str, attr: str, num_classes: int, shape: tuple[int, ...], opts: dict[str, Any]) -> nn.Module:
    source = f"{module}:{attr}"
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a user's module may fail to import in any way
        raise ConfigError(f"model {source}: cannot import module {module!r} ({_first_line(exc)}); "
                          f"expected {FORMS}") from None
    factory = getattr(mod, attr, None)
    if factory is None:
        raise ConfigError(f"model {source}: module {module!r} has no attribute {attr!r}"
                          f"{_close(attr, [n for n in dir(mod) if not n.startswith('_')])}")
    if not callable(factory):
        raise ConfigError(f"model {source}: {attr!r} is a {type(factory).__name__}, not a callable that builds a model")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # a builtin without a signature: pass the options alone
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra: dict[str, Any] = {k: v for k, v in (("num_classes", num_classes), ("input_shape", shape))
                             if k in params or takes_any}
    model = _call(factory, source, **{**extra, **opts})
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {source}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _call(fn: Callable[..., Any], source: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the constructor's own message says which option is wrong
        raise ConfigError(f"model {source} cannot be built with options {_shown(kwargs)}: "
                          f"{_first_line(exc)}") from None


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


def probe(model: nn.Module, shape: tuple[int, ...], label: str) -> Any:
    """The model's output for two zero samples of ``shape``, in eval mode and without a graph (every
    module's mode restored); a failing forward is one error naming ``label`` and the shape."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(2, *shape, device=device))
    except Exception as exc:
        raise ConfigError(f"{label} fails on input shape {shape}: {_first_line(exc)}") from None
    finally:
        for m, mode in modes.items():
            m.train(mode)


def check_model(model: nn.Module, source: str, num_classes: int, shape: tuple[int, ...]) -> None:
    """One forward pass of two zero samples in eval mode: the model must return ``(2, num_classes)``."""
    out = probe(model, shape, f"model {source}")
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise ConfigError(f"model {source} returns {got} for a batch of 2 inputs of shape {shape}; "
                          f"expected (2, {num_classes}): one score per class")


def _close(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _shown(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "none"
