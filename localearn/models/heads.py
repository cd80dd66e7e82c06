"""Local heads chosen by the shape of a block's features, and InfoPro's reconstruction decoder.

Heads follow the supervised-local literature:

- ``pool_linear``: adaptive average pool, flatten, Linear; DGL's baseline auxiliary head
  (Belilovsky et al., "Decoupled Greedy Learning of CNNs", ICML 2020) and InfoPro's ``0c1f``.
- ``mlp_sr``: DGL's MLP-SR-aux (``auxiliary_nets_study/models.py``): pool to ceil(S/4),
  3×[1×1 conv without bias, BN, ReLU], pool to 2×2, 3×[Linear, BN1d, ReLU], Linear.
- ``conv``: InfoPro's ``1c2f`` (Wang et al., "Revisiting Locally Supervised Learning", ICLR 2021):
  3×3 conv, BN, ReLU, global average pool, Linear→128, ReLU, Linear. InfoPro's CIFAR ResNets map
  16→32 and 32→64 channels with stride 2 and keep 64 at stride 1 on the last 8×8 stage; the generic
  rule here doubles the channels with stride 2 while the map is at least 16 wide, else keeps them
  at stride 1 (``channels``/``stride`` options override).
- ``mlp``: DGL's MLP-aux: pool to 2×2 (maps) or the token mean (tokens), then 3×[Linear, BN1d,
  ReLU] at the input width and a Linear.
- ``linear``: flatten and one Linear; Mono-Forward's projection (Gong et al., 2025) on any shape.
- ``mean`` / ``cls``: a token sequence's mean or its first (class) token, then a Linear, as ViT
  (Dosovitskiy et al., ICLR 2021) and its mean-pooled variants classify.

``auto`` picks ``pool_linear`` for feature maps (C, H, W), ``mean`` for token sequences (N, D) and
``linear`` for vectors (D,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from localearn.errors import ConfigError

KINDS = {
    "map": ("auto", "pool_linear", "mlp_sr", "conv", "mlp", "linear"),
    "tokens": ("auto", "mean", "cls", "mlp", "linear"),
    "vector": ("auto", "mlp", "linear"),
}
SHAPES = {3: "map", 2: "tokens", 1: "vector"}
DESCRIBED = {"map": "a feature map (C, H, W)", "tokens": "a token sequence (N, D)", "vector": "a vector (D,)"}


class TokenPool(nn.Module):
    """``(B, N, D) -> (B, D)``: the mean over tokens, or the first (class) token."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) if self.mode == "mean" else x[:, 0]

    def extra_repr(self) -> str:
        return self.mode


def feature_kind(feature_shape: Sequence[int]) -> str:
    """``map``, ``tokens`` or ``vector`` for one sample's feature shape."""
    kind = SHAPES.get(len(feature_shape))
    if kind is None:
        raise ConfigError(f"features of shape {tuple(feature_shape)} are not a feature map (C, H, W), a token "
                          "sequence (N, D) or a vector (D,); no head fits them")
    return kind


def make_head(kind: str, feature_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """A head mapping one block's features of ``feature_shape`` to ``num_classes`` scores."""
    shape = tuple(int(s) for s in feature_shape)
    family = feature_kind(shape)
    fits = KINDS[family]
    if kind not in fits:
        known = sorted({k for ks in KINDS.values() for k in ks})
        what = "does not fit" if kind in known else "is not a head kind; it does not fit"
        raise ConfigError(f"head {kind!r} {what} features of shape {shape} ({DESCRIBED[family]}); "
                          f"heads that fit: {', '.join(fits)}")
    if kind == "auto":
        kind = {"map": "pool_linear", "tokens": "mean", "vector": "linear"}[family]
    builder = _BUILDERS[kind]
    try:
        return builder(shape, num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"head {kind!r}: {exc}") from None


def _pool_linear(shape: tuple[int, ...], classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], classes))


def _mlp_layers(width: int, classes: int, layers: int) -> list[nn.Module]:
    out: list[nn.Module] = []
    for _ in range(layers):
        out += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
    return [*out, nn.Linear(width, classes)]


def _mlp_sr(shape: tuple[int, ...], classes: int, convs: int = 3, layers: int = 3) -> nn.Module:
    c, h, w = shape
    mods: list[nn.Module] = [nn.AdaptiveAvgPool2d((math.ceil(h / 4), math.ceil(w / 4)))]
    for _ in range(convs):
        mods += [nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), *_mlp_layers(4 * c, classes, layers))


def _conv(shape: tuple[int, ...], classes: int, channels: int | None = None, stride: int | None = None,
          hidden: int = 128) -> nn.Module:
    c, h, w = shape
    down = min(h, w) >= 16
    out = channels if channels is not None else (2 * c if down else c)
    step = stride if stride is not None else (2 if down else 1)
    return nn.Sequential(nn.Conv2d(c, out, 3, stride=step, padding=1, bias=False), nn.BatchNorm2d(out),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, classes))


def _mlp(shape: tuple[int, ...], classes: int, layers: int = 3) -> nn.Module:
    pool: list[nn.Module]
    if len(shape) == 3:
        pool, width = [nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten()], 4 * shape[0]
    elif len(shape) == 2:
        pool, width = [TokenPool("mean")], shape[1]
    else:
        pool, width = [], shape[0]
    return nn.Sequential(*pool, *_mlp_layers(width, classes, layers))


def _linear(shape: tuple[int, ...], classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes))


def _tokens(mode: str) -> Any:
    def build(shape: tuple[int, ...], classes: int) -> nn.Module:
        return nn.Sequential(TokenPool(mode), nn.Linear(shape[1], classes))
    return build


_BUILDERS = {"pool_linear": _pool_linear, "mlp_sr": _mlp_sr, "conv": _conv, "mlp": _mlp, "linear": _linear,
             "mean": _tokens("mean"), "cls": _tokens("cls")}


class Decoder(nn.Module):
    """InfoPro's CIFAR decoder, for any feature map or square token grid: bilinear upsampling to the
    image size, 3×3 conv C→12, BN, ReLU, 3×3 conv 12→image channels, sigmoid (an image in [0, 1]).
    Vector features, or inputs that are not images, get a linear decoder (Linear to the input's size,
    sigmoid): the generic stand-in for an MLP, which InfoPro does not define."""

    def __init__(self, feature_shape: Sequence[int], image_shape: Sequence[int]) -> None:
        super().__init__()
        shape, image = tuple(int(s) for s in feature_shape), tuple(int(s) for s in image_shape)
        self.size = image[1:]
        self.grid = 0  # tokens laid out on a grid x grid map (a leading class token dropped)
        self.net: nn.Module
        if len(shape) == 1 or len(image) != 3:
            if len(shape) not in (1, 3):
                raise ConfigError(f"a decoder to inputs of shape {image} needs a feature map or a vector, not {shape}")
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), math.prod(image)),
                                     nn.Unflatten(1, image))
            self.size = ()
            return
        if len(shape) == 2:
            n, d = shape
            side = next((s for s in (math.isqrt(n), math.isqrt(max(n - 1, 0))) if s and s * s in (n, n - 1)), 0)
            if not side:
                raise ConfigError(f"a decoder needs a feature map (C, H, W) or tokens on a square grid; {n} tokens "
                                  "are neither a square nor a square plus a class token")
            self.grid, channels = side, d
        elif len(shape) == 3:
            channels = shape[0]
        else:
            raise ConfigError(f"a decoder needs a feature map (C, H, W) or a token sequence, not shape {shape}")
        self.net = nn.Sequential(nn.Conv2d(channels, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                                 nn.Conv2d(12, image[0], 3, padding=1))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The reconstruction before its sigmoid (for a stable binary cross-entropy)."""
        if self.grid:
            h = h[:, -self.grid * self.grid:].transpose(1, 2).reshape(h.shape[0], -1, self.grid, self.grid)
        if self.size:
            h = nn.functional.interpolate(h, size=self.size, mode="bilinear", align_corners=True)
        return self.net(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(h))


def make_decoder(feature_shape: Sequence[int], image_shape: Sequence[int]) -> Decoder:
    """InfoPro's reconstruction decoder from features of ``feature_shape`` to images of ``image_shape``."""
    return Decoder(feature_shape, image_shape)
