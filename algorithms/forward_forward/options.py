"""Forward-Forward's options and the checks across them (see the package docstring).

Hinton, *The Forward-Forward Algorithm*, arXiv 2212.13345; Collaborative FF: Lorberbom et al.,
arXiv 2305.12393 (docs/learners/forward_forward.md). Every bad combination is refused with one line naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from localearn.errors import ConfigError

GOODNESS = ("sum", "mean")
NEGATIVES = ("random", "hard", "hybrid")
PREDICTIONS = ("per_label", "linear")
COLLAB = ("none", "all", "preceding")


def choice(option: str, value: Any, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ConfigError(f"forward_forward option {option}={value!r} is not valid; choose one of "
                          f"{', '.join(valid)}")
    return str(value)


def check_options(ff: Any, threshold: float | None, peer_norm: float, peer_momentum: float,
                  hybrid_blur_steps: int) -> int:
    """Refuse option combinations FF cannot train; returns the input width ``prod(input_shape)``."""
    if ff.arch.kind not in ("mlp", "modules"):  # modules: from_modules blocks
        raise ConfigError(f"forward_forward needs an mlp: architecture (got {ff.arch}); "
                          "its label is embedded into the flattened input")
    if not ff.embed:
        if ff.prediction != "linear":
            raise ConfigError("forward_forward option negatives='hybrid' embeds no label, so "
                              "prediction must be 'linear' (got prediction='per_label')")
        if ff.schedule_mode != "joint" or len(ff.input_shape) != 3:
            raise ConfigError("forward_forward option negatives='hybrid' needs image input "
                              f"(C, H, W) and schedule 'joint' (got {ff.input_shape}, "
                              f"{ff.schedule_mode!r})")
    if ff.collab == "all" and ff.schedule_mode == "greedy":
        raise ConfigError("forward_forward option collab='all' needs schedule 'joint' (later "
                          "layers are untrained in a greedy unit); use collab='preceding'")
    if not (0 <= peer_norm and 0 <= peer_momentum < 1 and hybrid_blur_steps >= 0):
        raise ConfigError("forward_forward needs peer_norm >= 0, 0 <= peer_momentum < 1 and "
                          "hybrid_blur_steps >= 0")
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"forward_forward option threshold must be finite, got {threshold}")
    in_dim = math.prod(ff.input_shape)
    if ff.arch.input_dim is not None and ff.arch.input_dim != in_dim:
        raise ConfigError(f"architecture {ff.arch} declares input width "
                          f"{ff.arch.input_dim}, but the data has {in_dim} features")
    if ff.embed and in_dim < ff.num_classes:
        raise ConfigError(f"forward_forward embeds {ff.num_classes} label values into the input, "
                          f"but the input has only {in_dim} values")
    return in_dim
