"""The conformance checks can fail: a learner that lets a gradient cross layers is caught."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.mono_forward import MonoForward

import localearn.registry as reg
from localearn.learner import Stage
from localearn.testing import check_deterministic, check_no_gradient_crosses_layers


class Leaky(MonoForward):
    """Mono-Forward with the detach forgotten: layer 1's loss reaches layer 0."""

    name = "leaky_test_only"
    aliases = ()

    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        x, y = batch
        h0 = self.layers[0](x)
        h1 = self.layers[1](h0)  # no detach
        loss = F.cross_entropy(self.layers[1].goodness(h1), y)
        loss.backward()
        for opt in self.optimizers():
            opt.step()
            opt.zero_grad(set_to_none=True)
        return {"loss": float(loss)}


class Noisy(MonoForward):
    name = "noisy_test_only"
    aliases = ()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        fresh = torch.Generator().manual_seed(int(torch.seed() % 2**31))  # ignores the global seed
        return super().predict(x) + torch.randn(x.shape[0], self.num_classes, generator=fresh)


def test_leaky_learner_fails_the_gradient_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(reg._REGISTRY, Leaky.name, Leaky)
    with pytest.raises(AssertionError, match="crossed a layer boundary"):
        check_no_gradient_crosses_layers(Leaky.name)


def test_nondeterministic_learner_fails_the_seed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(reg._REGISTRY, Noisy.name, Noisy)
    with pytest.raises(AssertionError, match="differ between identically seeded runs"):
        check_deterministic(Noisy.name)
