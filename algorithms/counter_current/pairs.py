"""The CCL training units: one :class:`CounterCurrentPair` per pair of the dual network.

With a forward network ``f_1..f_L`` and a feedback network ``g_1..g_L``
(docs/learners/counter_current.md#equations), the learner holds ``L + 1`` local layers, each owning
exactly the maps its loss trains:

* ``layer0``, the input pair ``(x, b_0)``: owns ``g_1`` only; its forward map is the identity.
* ``layer l`` (1 ≤ l < L), pair ``(a_l, b_l)``: owns ``f_l`` and ``g_{l+1}``.
* ``layer L``, the output: owns ``f_L`` only; CE on ``o`` (MSE to the image in autoencoder mode).

Each layer is a :class:`~localearn.layer.LocalLayer`, so its backward runs and its graph is freed before the
next pair runs (the memory benefit of docs/learners/counter_current.md#pitfall-pairwise-backward), and it owns
an optimizer with two parameter groups (``f``, ``g``); how they are clipped is the update policy's
``clip_scope``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from localearn.layer import Context, LocalLayer

from .losses import cosine_alignment_loss, dot_alignment_loss, map_pair_loss, reconstruction_pair_loss


class InplaceELU(nn.Module):
    """ELU applied in place to a fresh pre-activation.

    Autograd then keeps only the ELU *output* (which the alignment loss saves anyway) instead of
    input and output: the same function, fewer saved bytes. Only used on tensors that no other op
    saved (the output of a Linear or a conv).
    """

    def forward(self, z: Tensor) -> Tensor:
        return F.elu(z, inplace=True)


ACTIVATIONS = ("elu", "relu")


def activation(name: str) -> nn.Module:
    """The pair maps' nonlinearity, applied in place: ``elu`` (the classifiers, φ = ψ = ELU) or
    ``relu`` (the released autoencoder's ``act_F``/``act_B``); either keeps only its output."""
    return InplaceELU() if name == "elu" else nn.ReLU(inplace=True)


class Upsample(nn.Module):
    """Nearest upsampling to a fixed spatial size (the feedback inverse of a stride or a pool).

    The reference upsamples ×2 on 32×32 inputs; resizing to the forward map's exact size is the
    same on 32×32 and also inverts the odd sizes of 28×28 MNIST (7 → 4 → 7).
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="nearest")


@dataclass(frozen=True)
class PairLoss:
    """Which pair loss a layer uses and its scales (``dot`` MLP, ``cosine`` CNN, ``mse``/``map`` AE)."""

    kind: str
    s_c: float
    s_ssl: float


class CounterCurrentPair(LocalLayer):
    """One CCL training unit (see the module docstring for the three roles).

    Args:
        index: ``l``; the layer reads ``b_{l+1}`` from ``ctx["feedback"][l + 1]``.
        f: the forward map ``f_l`` (None for the input pair).
        g: the feedback map ``g_{l+1}`` (None for the output layer).
        loss: the pair loss; ignored by the output layer.
        top: whether this is the output layer (CE, or reconstruction MSE).
    """

    def __init__(self, index: int, f: nn.Module | None, g: nn.Module | None, loss: PairLoss, top: bool) -> None:
        super().__init__()
        self.index, self.f, self.g, self.loss_spec, self.top = index, f, g, loss, top

    def forward(self, x: Tensor) -> Tensor:
        return x if self.f is None else self.f(x)

    def feedback(self, b_next: Tensor) -> Tensor:
        """``b_l = ψ(g_{l+1}(b_{l+1}))``: this pair's feedback side."""
        assert self.g is not None
        return self.g(b_next)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups for the forward and feedback parameters, tagged ``clip_group`` f / g
        (the update policy clips each network side on its own, per pair or network-wide)."""
        groups = [{"params": list(m.parameters()), "clip_group": side}
                  for side, m in (("f", self.f), ("g", self.g)) if m is not None]
        return [g for g in groups if g["params"]]

    def scores(self, h: Tensor, ctx: Context) -> Tensor | None:
        """The output layer: ``o``; pair l: each sample's alignment ``a_l b_lᵀ`` with the C class
        prototypes ``b_l`` (cosines for the CNN); the input pair and the autoencoder: none."""
        if ctx.get("feedback") is None:
            return None
        if self.top:
            return h
        if self.index == 0:
            return None
        a, b = h.flatten(1), ctx["feedback"][self.index].flatten(1)
        if ctx["cosine"]:
            a, b = F.normalize(a, dim=1, eps=1e-8), F.normalize(b, dim=1, eps=1e-8)
        return a @ b.T

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        spec = self.loss_spec
        if self.top:
            if spec.kind == "mse":
                return F.mse_loss(h.flatten(1), ctx["target"])
            if spec.kind == "map":
                return map_pair_loss(h, ctx["target"], spec.s_c, 0.0)
            assert ctx.y is not None
            return F.cross_entropy(h, ctx.y)
        b = self.feedback(ctx["feedback"][self.index + 1])
        mask = ctx.get("mask")
        if spec.kind == "dot":
            loss = dot_alignment_loss(h, b, ctx["y_onehot"], spec.s_c, mask)
        elif spec.kind == "cosine":
            loss = cosine_alignment_loss(h, b, ctx["y_onehot"], spec.s_c, spec.s_ssl, mask)
        elif spec.kind == "map":  # the input pair (x, b_0) is an end pair: no centred-map term
            loss = map_pair_loss(h, b, spec.s_c, spec.s_ssl if self.index > 0 else 0.0)
        else:
            loss = reconstruction_pair_loss(h, b, spec.s_c, spec.s_ssl)
        return loss


def _act(last: bool, width: int = 0, norm: bool = False, act: str = "elu") -> list[nn.Module]:
    if last:
        return []
    # autoencoder mode: BN (no affine) before the nonlinearity keeps both sides from collapsing
    # onto the trivial a_l = b_l = const minimum of the MSE pair loss (the reference AE uses BN too)
    return [nn.BatchNorm1d(width, affine=False), activation(act)] if norm else [activation(act)]


def build_mlp_pairs(
    widths: tuple[int, ...],
    input_shape: tuple[int, ...],
    out_dim: int,
    loss: PairLoss,
    top_kind: PairLoss,
    norm: bool = False,
    act: str = "elu",
) -> list[CounterCurrentPair]:
    """Bias-free Linear pairs ``in → widths... → out_dim`` (``act`` on both sides, none at the ends).

    ``norm`` puts a BatchNorm (no affine) before every hidden nonlinearity, on both sides (AE mode
    only: in classifier mode the feedback batch is the C one-hots, where BN must stay off,
    docs/learners/counter_current.md#pitfall-feedback-batch).
    """
    dims = [math.prod(input_shape), *widths, out_dim]
    n = len(dims) - 1  # L
    layers: list[CounterCurrentPair] = []
    for idx in range(n + 1):
        f: nn.Module | None = None
        g: nn.Module | None = None
        if idx >= 1:  # f_idx: dims[idx-1] -> dims[idx]; no activation on the output map
            mods: list[nn.Module] = [nn.Flatten()] if idx == 1 else []
            mods += [nn.Linear(dims[idx - 1], dims[idx], bias=False)]
            f = nn.Sequential(*mods, *_act(idx == n, dims[idx], norm, act))
        if idx < n:  # g_{idx+1}: dims[idx+1] -> dims[idx]; no activation at the bottom (b_0)
            lin = nn.Linear(dims[idx + 1], dims[idx], bias=False)
            g = nn.Sequential(lin, *_act(idx == 0, dims[idx], norm, act))
        layers.append(CounterCurrentPair(idx, f, g, top_kind if idx == n else loss, idx == n))
    return layers


def reference_ae_init(layers: list[CounterCurrentPair], code: int) -> None:
    """The initialisation of the reference conv autoencoder (``models_cnn_ae_legacy.py``).

    Every weight orthogonal; the decoder half of each network starts near zero (× 1e-3: the
    forward maps ``f_l`` with ``l > code`` and the feedback maps ``g_l`` with ``l <= code``, which
    decode the target back to the image); the two maps that emit an image (``f_L`` and ``g_1``)
    start at exactly zero. Both networks then begin as "encoder, then almost nothing", so early
    pair losses are driven by the encoders' features rather than by two random decoders.

    Args:
        layers: the pairs from :func:`build_mlp_pairs` (``L + 1`` of them).
        code: ``m``, the index of the code layer: ``f_1..f_m`` encode, ``f_{m+1}..f_L`` decode.
    """
    last = len(layers) - 1
    for idx, pair in enumerate(layers):
        # pair idx owns f_idx and g_{idx+1}; f_L and g_1 emit images and start at zero
        _reference_init(pair.f, 0.0 if idx == last else 1e-3 if idx > code else 1.0)
        _reference_init(pair.g, 0.0 if idx == 0 else 1e-3 if idx + 1 <= code else 1.0)


def _reference_init(mod: nn.Module | None, scale: float) -> None:
    """Orthogonal Linear / Conv2d weights times ``scale``, zero biases (the reference's init).

    Convs with fewer outputs than inputs are made orthogonal over (in, out·k·k), as released.
    """
    for m in mod.modules() if mod is not None else ():
        if isinstance(m, nn.Linear | nn.Conv2d):
            w = m.weight
            if w.dim() == 4 and w.shape[0] < w.shape[1]:
                w.data = nn.init.orthogonal_(w.data.transpose(0, 1).contiguous()).transpose(0, 1).contiguous()
            else:
                nn.init.orthogonal_(w)
            w.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_cnn_ae_pairs(
    channels: tuple[int, ...], input_shape: tuple[int, ...], loss: PairLoss, act: str = "relu"
) -> list[CounterCurrentPair]:
    """The conv autoencoder of the reference (``models_cnn_ae_legacy.py``), at any depth.

    Encoder ``f_1..f_K``: conv3×3 stride 2 → BN → act, channels ``C_1..C_K``; decoder
    ``f_{K+1}..f_{2K}``: nearest upsample → conv3×3 → BN → act, back to the input (no BN or act on
    the reconstruction). ``act`` is ReLU in the released STL-10 recipe (``act_F``/``act_B``). The
    feedback maps mirror them: ``g_l`` for a decoder layer is a stride-2
    conv (the feedback network *encodes* the target), for an encoder layer an upsample + conv, and
    ``g_1`` emits the feedback network's image. Upsampling goes to the exact size of the mirrored
    map, so odd sizes (28 → 14 → 7 → 4) invert too. BN has no affine: the reference never hands its
    BN parameters to an optimizer. Pair losses: ``kind="map"`` (:func:`~.losses.map_pair_loss`).
    """
    c, h, w = input_shape
    shapes = [(c, h, w)]
    for ch in channels:
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((ch, h, w))
    shapes += shapes[-2::-1]  # the decoder retraces the encoder's sizes
    n = len(shapes) - 1  # L = 2K forward maps

    def block(src: tuple[int, int, int], dst: tuple[int, int, int], plain: bool) -> nn.Sequential:
        down = dst[1] < src[1]
        mods: list[nn.Module] = [] if down else [Upsample(dst[1:])]
        mods.append(nn.Conv2d(src[0], dst[0], 3, 2 if down else 1, 1))
        return nn.Sequential(*mods, *([] if plain else [nn.BatchNorm2d(dst[0], affine=False), activation(act)]))

    layers: list[CounterCurrentPair] = []
    for idx in range(n + 1):
        f = block(shapes[idx - 1], shapes[idx], idx == n) if idx >= 1 else None
        g = block(shapes[idx + 1], shapes[idx], idx == 0) if idx < n else None
        layers.append(CounterCurrentPair(idx, f, g, loss, idx == n))
    return layers


def build_cnn_pairs(
    channels: tuple[int, ...],
    input_shape: tuple[int, ...],
    num_classes: int,
    conv: str,
    loss: PairLoss,
    act: str = "elu",
) -> list[CounterCurrentPair]:
    """Conv pairs (docs/learners/counter_current.md#reference), then a bias-free Linear output pair.

    ``conv="stride"``: f = conv3×3 stride 2 (bias) → act; g = upsample → conv3×3 (bias) → act.
    ``conv="pool"``: f = conv3×3 stride 1 (no bias) → act → maxpool 2; g = upsample → conv → act.
    ``act`` is ELU as released.
    """
    c, h, w = input_shape
    shapes = [(c, h, w)]
    for ch in channels:
        h, w = ((h + 1) // 2, (w + 1) // 2) if conv == "stride" else (h // 2, w // 2)
        shapes.append((ch, h, w))
    n = len(channels) + 1
    layers: list[CounterCurrentPair] = []
    top = PairLoss("ce", loss.s_c, loss.s_ssl)
    for idx in range(n + 1):
        f: nn.Module | None = None
        g: nn.Module | None = None
        bias = conv == "stride"
        if 1 <= idx < n:
            (cin, _, _), (cout, _, _) = shapes[idx - 1], shapes[idx]
            stride = 2 if conv == "stride" else 1
            mods: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=bias), activation(act)]
            f = nn.Sequential(*mods, *([nn.MaxPool2d(2)] if conv == "pool" else []))
        elif idx == n:
            f = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shapes[-1]), num_classes, bias=False))
        if idx == n - 1:  # g_L: the class one-hots to the top feature map
            g = nn.Sequential(
                nn.Linear(num_classes, math.prod(shapes[-1]), bias=False),
                activation(act),
                nn.Unflatten(1, shapes[-1]),
            )
        elif idx < n - 1:
            (cin, hh, ww), (cout, _, _) = shapes[idx], shapes[idx + 1]
            g = nn.Sequential(Upsample((hh, ww)), nn.Conv2d(cout, cin, 3, 1, 1, bias=bias), *_act(idx == 0, act=act))
        layers.append(CounterCurrentPair(idx, f, g, top if idx == n else loss, idx == n))
    return layers
