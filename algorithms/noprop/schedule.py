"""NoProp's fixed noising process: the cosine signal schedule, SNR, its weights and a_t, b_t, c_t.

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322 (docs/learners/noprop.md#noising).

Indexing follows the paper: z_0 is pure noise, z_T is closest to the label embedding u_y, and the
signal level ᾱ_t increases with t, ``q(z_t | y) = N(√ᾱ_t u_y, (1 − ᾱ_t) I)``.

The schedule (exact formula). With s = 0.008 (Nichol & Dhariwal's cosine offset) and t = 0..T::

    ᾱ_t = min( cos²( (π/2) · (1 − t/T + s) / (1 + s) ),  ᾱ_max ),   ᾱ_max = 0.999 by default

i.e. Nichol & Dhariwal's cosine curve read backwards in t (noise at t = 0, label at t = T),
*without* their normalisation by f(0), so ᾱ_0 = cos²(π/2) ≈ 0 and the prior z_0 ~ N(0, I) matches
q(z_0 | y). The clamp keeps ᾱ_T below 1 so that SNR(T) = ᾱ_T / (1 − ᾱ_T) stays finite
(docs/learners/noprop.md#pitfall-snr-weight): for T = 10 the unclamped ᾱ_T is 0.99985 (SNR 6 450); the clamp makes
it 0.999 (SNR 999), and it is active only for the last level. The clamp value is an assumption
(the paper only says "fixed cosine schedule"); it is an option of the learner.

The per-step signal retention is α_{t−1} = ᾱ_{t−1} / ᾱ_t (since ᾱ_t = Π_{s=t..T} α_s), and the
posterior q(z_t | z_{t−1}, y) = N(a_t u_y + b_t z_{t−1}, c_t I) has::

    a_t = √ᾱ_t (1 − α_{t−1}) / (1 − ᾱ_{t−1})
    b_t = √α_{t−1} (1 − ᾱ_t) / (1 − ᾱ_{t−1})
    c_t = (1 − ᾱ_t)(1 − α_{t−1}) / (1 − ᾱ_{t−1})

Everything is computed in float64 and stored as float32 buffers by the learner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from localearn.errors import ConfigError

COSINE_OFFSET = 0.008


def cosine_alpha_bar(T: int, max_signal: float = 0.999, s: float = COSINE_OFFSET) -> Tensor:
    """ᾱ_0 … ᾱ_T of the fixed cosine schedule (see the module docstring), float64, shape (T+1,).

    Raises:
        ConfigError: if T < 1 or max_signal is not in (0, 1).
    """
    if int(T) < 1:
        raise ConfigError(f"T (number of NoProp blocks) must be at least 1, got {T}")
    if not 0.0 < max_signal < 1.0:
        raise ConfigError(f"max_signal (the clamp on ᾱ_T) must lie in (0, 1), got {max_signal}")
    t = torch.arange(T + 1, dtype=torch.float64)
    bar = torch.cos((math.pi / 2) * (1 - t / T + s) / (1 + s)) ** 2
    return bar.clamp(max=max_signal)


def snr(alpha_bar: Tensor) -> Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
    return alpha_bar / (1 - alpha_bar)


@dataclass(frozen=True)
class DiscreteSchedule:
    """All per-step constants of NoProp-DT, index t = 0..T (entries at t = 0 of a, b, c, weight
    are unused and set to 0).

    Attributes:
        alpha_bar: ᾱ_t.
        snr: SNR(t).
        weight: (T·η/2)(SNR(t) − SNR(t−1)), the factor of block t's L2 term.
        a, b, c: posterior coefficients of the inference update.
    """

    alpha_bar: Tensor
    snr: Tensor
    weight: Tensor
    a: Tensor
    b: Tensor
    c: Tensor

    @property
    def T(self) -> int:
        return len(self.alpha_bar) - 1


def discrete_schedule(T: int, eta: float = 0.1, max_signal: float = 0.999) -> DiscreteSchedule:
    """The NoProp-DT constants for ``T`` blocks and L2 scale ``eta`` (float64)."""
    if not (eta > 0 and math.isfinite(eta)):
        raise ConfigError(f"eta (the L2 term's scale) must be a positive number, got {eta}")
    bar = cosine_alpha_bar(T, max_signal)
    s = snr(bar)
    weight = torch.zeros_like(bar)
    weight[1:] = (T * eta / 2) * (s[1:] - s[:-1])
    a, b, c = (torch.zeros_like(bar) for _ in range(3))
    prev, cur = bar[:-1], bar[1:]
    alpha_prev = prev / cur  # α_{t−1} = ᾱ_{t−1} / ᾱ_t
    a[1:] = cur.sqrt() * (1 - alpha_prev) / (1 - prev)
    b[1:] = alpha_prev.sqrt() * (1 - cur) / (1 - prev)
    c[1:] = (1 - cur) * (1 - alpha_prev) / (1 - prev)
    return DiscreteSchedule(bar, s, weight, a, b, c)


def kl_to_prior(u: Tensor, alpha_bar_0: float | Tensor) -> Tensor:
    """KL(q(z_0|y) ‖ N(0, I)) up to its embedding-independent constant: ½ ᾱ_0 ‖u_y‖², batch mean.

    The full KL is ½[ᾱ_0‖u‖² − d ᾱ_0 − d log(1 − ᾱ_0)]; only the first part depends on the
    (learned) embedding, so it is the only part that produces a gradient.
    """
    return 0.5 * alpha_bar_0 * u.pow(2).sum(1).mean()
