"""Seeds and statistics for fair comparisons (docs/concepts/protocol.md#rule-4).

Spyra & Dzwinel, *Energy-Efficient Deep Learning Without Backpropagation: A Rigorous Evaluation
of Forward-Only Algorithms*, arXiv 2511.01061 (revised): their TPE sampler was seeded with the
global seed, so studies over the same space returned identical suggestions; contrasts are paired
by seed with 10 000 bootstrap resamples, equivalence is a TOST inside ±0.25 pp, and Holm's
correction runs within each metric family.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def sampler_seed(study_name: str) -> int:
    """The TPE sampler seed: the first 32 bits of SHA-256(study name)."""
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:4], "big")


def trial_seed(study_name: str, trial_number: int) -> int:
    """A trial's training seed, derived from (study name, trial number)."""
    digest = hashlib.sha256(f"{study_name}\x00{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def check_no_collisions(chosen: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise if two studies chose identical hyperparameters (a sampler seed collision).

    Args:
        chosen: study name → its best parameters.
    """
    seen: dict[tuple[tuple[str, Any], ...], str] = {}
    for study, params in chosen.items():
        key = tuple(sorted(params.items()))
        if key in seen:
            raise ValueError(
                f"studies {seen[key]!r} and {study!r} chose identical values {dict(key)}: "
                "a seed collision; re-run one with its own sampler seed"
            )
        seen[key] = study


def paired_bootstrap_ci(
    arm: Sequence[float], baseline: Sequence[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean paired difference ``arm − baseline`` and its percentile bootstrap CI.

    The two sequences are paired by seed (same index, same seed); pairs are resampled together.
    """
    a, b = np.asarray(arm, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two paired 1-D samples of equal length >= 2, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(diff.mean()), float(lo), float(hi)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one paired contrast."""

    label: str  # EQUIVALENT | DIFFERENT | INCONCLUSIVE
    mean: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    n: int


def verdict(arm: Sequence[float], baseline: Sequence[float], *, margin: float = 0.25, seed: int = 0) -> Verdict:
    """EQUIVALENT when the 90 % CI (TOST) lies inside ±margin; DIFFERENT when the 95 % CI excludes
    0; otherwise INCONCLUSIVE. Units are those of the inputs (percentage points for accuracy)."""
    mean, lo95, hi95 = paired_bootstrap_ci(arm, baseline, level=0.95, seed=seed)
    _, lo90, hi90 = paired_bootstrap_ci(arm, baseline, level=0.90, seed=seed)
    if -margin < lo90 and hi90 < margin:
        label = "EQUIVALENT"
    elif lo95 > 0 or hi95 < 0:
        label = "DIFFERENT"
    else:
        label = "INCONCLUSIVE"
    return Verdict(label, mean, (lo95, hi95), (lo90, hi90), len(arm))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
