"""The greedy frozen-prefix cache: served from memory once per unit, bounded, and exact in value."""

from __future__ import annotations

import pytest

from localearn import TrainConfig, Trainer, create_learner, load_dataset
from localearn.errors import ConfigError


def _fit(cache_gb: float) -> tuple[dict, object]:
    data = load_dataset("digits")
    import torch

    torch.manual_seed(0)
    learner = create_learner("mf", arch="mlp:3x64", input_shape=data.input_shape, num_classes=10)
    trainer = Trainer(learner, data, TrainConfig(epochs=3, batch_size=64, progress=False, seed=0,
                                                 prefix_cache_gb=cache_gb))
    return trainer.fit(), learner


def test_cached_prefix_gives_the_recomputed_run_and_is_hit() -> None:
    plain, _ = _fit(0.0)
    cached, learner = _fit(1.0)
    cache = learner.prefix_cache  # type: ignore[attr-defined]
    assert cache is not None and cache.hits > 0
    # The last unit (layer2) reads its 2-layer prefix from memory after its first epoch: every
    # training row (1294 on digits) is stored once, and most rows of epochs 2-3 are hits.
    assert cache.rows == 1294 and cache.hits >= 2000, (cache.rows, cache.hits)
    # Cached rows were computed in other batches: equal up to float rounding, not bit for bit.
    for a, b in zip(plain["history"], cached["history"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-6)
    assert cached["metrics"]["test_accuracy"] == pytest.approx(plain["metrics"]["test_accuracy"], abs=0.006)


def test_a_cache_that_never_hits_switches_itself_off_and_recomputes() -> None:
    """Nothing fits in about one byte, so no row is ever served (as with augmented data, where no
    row repeats): every batch is recomputed whole, and after an epoch without hits the cache is
    dropped."""
    plain, _ = _fit(0.0)
    tiny, learner = _fit(1e-9)
    assert learner.prefix_cache is None  # type: ignore[attr-defined]
    assert tiny["history"] == plain["history"]  # bit for bit: the recompute path itself


def test_bad_cache_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="prefix_cache_gb must be >= 0"):
        TrainConfig(prefix_cache_gb=-1).validate()
