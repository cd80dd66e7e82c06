from __future__ import annotations

import hashlib

import pytest
from localearn.studies import check_no_collisions, holm, paired_bootstrap_ci, sampler_seed, trial_seed, verdict


def test_sampler_seed_is_sha256_of_the_name() -> None:
    expected = int(hashlib.sha256(b"mnist-mf").hexdigest()[:8], 16)
    assert sampler_seed("mnist-mf") == expected
    assert sampler_seed("mnist-mf") != sampler_seed("mnist-bp")
    assert trial_seed("s", 0) != trial_seed("s", 1) != trial_seed("t", 1)


def test_collisions_are_caught() -> None:
    check_no_collisions({"a": {"lr": 1e-3}, "b": {"lr": 2e-3}})
    with pytest.raises(ValueError, match="'a' and 'b' chose identical values"):
        check_no_collisions({"a": {"lr": 1e-3, "wd": 0.0}, "b": {"wd": 0.0, "lr": 1e-3}})


def test_bootstrap_and_verdicts() -> None:
    base = [98.0, 98.2, 97.9, 98.1, 98.0, 98.3, 97.8]
    mean, lo, hi = paired_bootstrap_ci([b + 1.0 for b in base], base)
    assert (mean, lo, hi) == pytest.approx((1.0, 1.0, 1.0))
    assert verdict([b + 1.0 for b in base], base).label == "DIFFERENT"
    jitter = [0.05, -0.04, 0.03, -0.02, 0.01, -0.03, 0.02]
    assert verdict([b + j for b, j in zip(base, jitter, strict=True)], base).label == "EQUIVALENT"
    noisy = [1.5, -1.2, 0.9, -1.4, 1.1, -0.8, 0.2]
    assert verdict([b + j for b, j in zip(base, noisy, strict=True)], base).label == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_holm_matches_hand_computation() -> None:
    # p sorted: 0.01*3=0.03, 0.02*2=0.04, 0.04*1=0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
