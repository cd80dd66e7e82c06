"""Bring a model: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``.

The model zoos are torchvision's classification models (``torchvision.models.get_model``, the
TorchVision maintainers, 2016-) and timm (Wightman, "PyTorch Image Models", 2019-), always built
with random weights (nothing is downloaded). On small images the ImageNet stem becomes the CIFAR
stem (:mod:`localearn.models.stems`) unless ``options["stem"] == "imagenet"``; torchvision's ViTs
(Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) are built as
``VisionTransformer(image_size=H, patch_size=4, ...)`` at the named variant's width and depth.
Other ``options`` go to the model's constructor (``--model-opt num_layers=6``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer

from localearn.errors import ConfigError
from localearn.models.stems import SMALL, STEMS, adapt_stem

log = logging.getLogger(__name__)
FORMS = "torchvision:NAME, timm:NAME or package.module:factory"
# torchvision's ViT variants: patch size, layers, heads, hidden width, MLP width (torchvision.models.vit_*).
VITS = {"vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
        "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096),
        "vit_h_14": (14, 32, 16, 1280, 5120)}


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


def check_model(model: nn.Module, source: str, num_classes: int, shape: tuple[int, ...]) -> None:
    """One forward pass of two zero samples in eval mode: the model must return ``(2, num_classes)``."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, device=device))
    except Exception as exc:
        raise ConfigError(f"model {source} fails on input shape {shape}: {_first_line(exc)}") from None
    finally:
        for m, mode in modes.items():
            m.train(mode)
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
