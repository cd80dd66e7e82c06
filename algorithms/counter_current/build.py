"""Builds CCL's dual network from an architecture spec (see :mod:`.pairs` for the pairs).

Kao & Hariharan, *Counter-Current Learning*, NeurIPS 2024, arXiv 2409.19841 (docs/learners/counter_current.md).
``mlp:`` specs give bias-free Linear pairs (MLP autoencoder stand-in in autoencoder mode),
``cnn:`` specs the CCL conv pairs (classifier) or the reference's conv autoencoder.
"""

from __future__ import annotations

import math

from localearn.arch import ArchSpec
from localearn.errors import ConfigError

from .pairs import CounterCurrentPair, PairLoss, build_cnn_ae_pairs, build_cnn_pairs, build_mlp_pairs, reference_ae_init


def build_pairs(arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int, ae: bool, conv: str, s_c: float,
                s_ssl: float, init: str, act: str) -> tuple[list[CounterCurrentPair], str]:
    """The pairs of ``arch`` and the conv type used (``none`` for MLPs); raises ConfigError for
    shapes the spec cannot take."""
    if arch.kind == "mlp":
        if arch.input_dim is not None and arch.input_dim != math.prod(input_shape):
            raise ConfigError(
                f"architecture {arch} declares input width {arch.input_dim}, but the "
                f"data has {math.prod(input_shape)} features per sample"
            )
        pair = PairLoss("mse" if ae else "dot", s_c if not ae else 1.0, s_ssl)
        out_dim = math.prod(input_shape) if ae else num_classes
        layers = build_mlp_pairs(
            arch.widths,
            input_shape,
            out_dim,
            pair,
            PairLoss("mse" if ae else "ce", 1.0, 0.0),
            norm=ae,
            act=act,
        )
        if ae and init in ("auto", "reference"):
            # the code layer: the narrowest hidden layer, ties broken towards the middle
            w = arch.widths
            code = min(range(len(w)), key=lambda i: (w[i], abs(2 * i - (len(w) - 1))))
            reference_ae_init(layers, code + 1)
        conv_used = "none"
    elif ae:
        if len(input_shape) != 3:
            raise ConfigError(f"{arch} needs image input (C, H, W), got {input_shape}")
        if conv == "pool":
            raise ConfigError("the conv autoencoder uses stride-2 convs (conv='stride' or 'auto')")
        conv_used = "stride"
        layers = build_cnn_ae_pairs(arch.widths, input_shape, PairLoss("map", 1.0, s_ssl), act)
        if init in ("auto", "reference"):
            reference_ae_init(layers, len(arch.widths))  # the code is the last encoder map
    else:
        if len(input_shape) != 3:
            raise ConfigError(f"{arch} needs image input (C, H, W), got {input_shape}")
        conv_used = conv if conv != "auto" else ("stride" if input_shape[0] == 1 else "pool")
        size = min(input_shape[1:])
        for _ in arch.widths:
            size = (size + 1) // 2 if conv_used == "stride" else size // 2
        if size < 1:
            raise ConfigError(
                f"{arch} with conv={conv_used!r} downsamples "
                f"{input_shape} below 1 pixel; use fewer blocks or conv='stride'"
            )
        layers = build_cnn_pairs(
            arch.widths,
            input_shape,
            num_classes,
            conv_used,
            PairLoss("cosine", s_c, s_ssl),
            act,
        )
    return layers, conv_used
