"""The conformance checks can fail: a learner that lets a gradient cross layers is caught."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.counter_current import CounterCurrent
from localearn.algorithms.mono_forward import MonoForward

import localearn
import localearn.registry as reg
from localearn.learner import Stage
from localearn.testing import check_declared_coupling, check_deterministic, check_no_gradient_crosses_layers


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


class ClaimsLocal(CounterCurrent):
    """CCL with the network-wide clip that still claims to be block-local."""

    name = "claims_local_test_only"
    aliases = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_local = True


class PairClip(CounterCurrent):
    name = "pair_clip_test_only"
    aliases = ()
    test_options = {"clip_scope": "pair"}  # noqa: RUF012


def test_a_coupled_learner_that_claims_block_locality_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """CCL's network clip scales each pair's step by a norm over all pairs: the check sees it."""
    monkeypatch.setitem(reg._REGISTRY, ClaimsLocal.name, ClaimsLocal)
    with pytest.raises(AssertionError, match="declares block_local, but these parameters stepped"):
        check_declared_coupling(ClaimsLocal.name)
    monkeypatch.setitem(reg._REGISTRY, PairClip.name, PairClip)
    assert PairClip("mlp:2x32", (1, 8, 8), 10, clip_scope="pair").block_local
    check_declared_coupling(PairClip.name)  # per-pair clipping is block-local, and passes


def test_ccl_and_the_backprop_baselines_declare_their_coupling() -> None:
    caps = {n: localearn.get_algorithm(n).capabilities() for n in ("counter_current", "backprop_gnn", "backprop")}
    assert all(c["block_local"] is False and c["coupling"] for c in caps.values())
    assert "network-wide gradient clip" in caps["counter_current"]["coupling"]
    assert localearn.get_algorithm("mono_forward").capabilities()["block_local"] is True
