"""CaFo: sparsemax, closed-form and full-batch predictors, DFA locality, frozen blocks, the feature
cache, option checking and accuracy on real data (scikit-learn digits)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.cafo import CaFo, CafoPredictor, FeatureCache, sparsemax, sparsemax_loss

import localearn
from localearn.data import load_dataset
from localearn.data.base import ImageData
from localearn.errors import ConfigError
from localearn.testing.conformance import _digits_batch
from localearn.trainer import TrainConfig, Trainer, make_optimizer_factory
from localearn.utils import seed_everything


def _learner(**options) -> CaFo:
    seed_everything(0)
    options = {"arch": "cnn:4-8-8", **options}
    learner = CaFo(input_shape=(1, 8, 8), num_classes=10, **options)
    learner.configure_optimizers(make_optimizer_factory("adam", 1e-3, 0.0))
    return learner


def _stage(learner: CaFo, name: str):
    return next(s for s in learner.stages() if s.name == name)


# ------------------------------------------------------------------------------------ sparsemax
def test_sparsemax_hand_values() -> None:
    z = torch.tensor([[1.0, 0.5, -1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.3, -5.0]])
    expected = torch.tensor(
        [[0.75, 0.25, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]]
    )
    assert torch.allclose(sparsemax(z), expected, atol=1e-7)


def test_sparsemax_loss_hand_values() -> None:
    # z = (1, .5, -1): S = {0, 1}, τ = 1/4; loss = −z_y + ½Σ_S(z_j² − τ²) + ½.
    z = torch.tensor([[1.0, 0.5, -1.0], [1.0, 0.5, -1.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    y = torch.tensor([0, 2, 0, 1])
    expected = torch.tensor([0.0625, 2.0625, 0.0, 2.0])
    assert torch.allclose(sparsemax_loss(z, y, reduction="none"), expected, atol=1e-6)


def test_sparsemax_loss_gradient_is_sparsemax_minus_onehot() -> None:
    gen = torch.Generator().manual_seed(0)
    z = (3 * torch.randn(64, 10, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 10, (64,), generator=gen)
    sparsemax_loss(z, y, reduction="none").sum().backward()
    expected = sparsemax(z.detach()) - F.one_hot(y, 10).double()
    assert z.grad is not None
    assert torch.allclose(z.grad, expected, atol=1e-12)
    assert (sparsemax(z.detach()) == 0).any()  # the test covers sparse rows, not only dense ones


# --------------------------------------------------------------------------- closed-form heads
def _digit_features(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits_batch(n)
    learner = _learner(arch="cnn:4")  # d = 4·4·4 = 64
    learner.eval()
    with torch.no_grad():
        return learner.blocks[0](x).flatten(1), y


@pytest.mark.parametrize("n", [300, 40])  # N > d: the direct solve; N < d: the pseudo-inverse
def test_closed_form_mse_equals_numpy_lstsq(n: int) -> None:
    h, y = _digit_features(n)
    pred = CafoPredictor(h.shape[1], 10, "mse")
    for chunk in range(0, n, 32):  # summed over mini-batches, as during an epoch
        pred.accumulate(h[chunk : chunk + 32], y[chunk : chunk + 32])
    pred.finalize()
    ref, *_ = np.linalg.lstsq(h.double().numpy(), np.eye(10)[y.numpy()], rcond=None)
    got = pred.linear.weight.detach().double().t().numpy()
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert bool(pred.solved)


def test_closed_form_ridge_matches_formula() -> None:
    h, y = _digit_features(200)
    pred = CafoPredictor(h.shape[1], 10, "mse", lam=0.5)
    pred.accumulate(h, y)
    pred.finalize()
    hd, yd = h.double().numpy(), np.eye(10)[y.numpy()]
    ref = np.linalg.solve(hd.T @ hd + 0.5 * np.eye(hd.shape[1]), hd.T @ yd)
    assert np.allclose(pred.linear.weight.detach().double().t().numpy(), ref, rtol=1e-4, atol=1e-7)


def test_ce_fullbatch_takes_one_official_step_per_pass() -> None:
    h, y = _digit_features(120)
    pred = CafoPredictor(h.shape[1], 10, "ce_fullbatch", lam=0.1, fullbatch_lr=0.01)
    assert torch.equal(pred.linear.weight, torch.ones(10, h.shape[1]))  # W_0 = all ones
    for chunk in range(0, 120, 50):
        pred.accumulate(h[chunk : chunk + 50], y[chunk : chunk + 50])
    pred.finalize()
    hd, yd = h.double(), F.one_hot(y, 10).double()
    w0 = torch.ones(h.shape[1], 10, dtype=torch.float64)
    w1 = w0 - 0.01 * (hd.t() @ (torch.softmax(hd @ w0, 1) - yd) / 120 + 0.1 * w0)
    assert torch.allclose(pred.linear.weight.double().t(), w1, atol=1e-6)
    assert not pred.pending


# --------------------------------------------------------------------------------------- DFA
def test_feedback_matrices_unit_rows_seeded_and_fixed() -> None:
    a, b = _learner(blocks="dfa", feedback_seed=3), _learner(blocks="dfa", feedback_seed=3)
    fbs = [blk.feedback for blk in a.blocks[:-1]]
    assert a.blocks[-1].feedback is None and a.blocks[-1].head is not None
    for fb, other in zip(fbs, [blk.feedback for blk in b.blocks[:-1]], strict=True):
        assert fb is not None and other is not None
        assert fb.shape[0] == 10 and torch.allclose(fb.norm(dim=1), torch.ones(10))
        assert torch.equal(fb, other)
        assert not fb.requires_grad
    assert "layers.0.feedback" in a.state_dict()
    before = [fb.clone() for fb in fbs if fb is not None]
    x, y = _digits_batch()
    stage = _stage(a, "dfa")
    for _ in range(3):
        a.start_epoch(stage, 1, 1)
        a.train_step((x, y), stage)
    assert all(torch.equal(fb, old) for fb, old in zip(fbs, before, strict=True))


def test_dfa_update_is_the_local_feedback_gradient_and_nothing_else() -> None:
    """With plain SGD, every block moves by exactly −lr·(∂h_k/∂θ_k)ᵀ(e B_k) (block K and the
    head: −lr·∇CE), each optimizer sees only its own block's gradients, and BN statistics move
    once."""
    seed_everything(0)
    learner = CaFo(
        arch="cnn:4-8-8", input_shape=(1, 8, 8), num_classes=10, blocks="dfa", block_lr=0.1
    )
    learner.configure_optimizers(make_optimizer_factory("sgd", 0.1, 0.0, momentum=0.0))
    ref = copy.deepcopy(learner)
    x, y = _digits_batch()
    stage = _stage(learner, "dfa")
    learner.start_epoch(stage, 1, 1)
    ref.start_epoch(stage, 1, 1)

    own = [{id(p) for p in blk.parameters()} for blk in learner.blocks]
    seen: list[tuple[int, set[int]]] = []
    for i, blk in enumerate(learner.blocks):
        opt = blk.optimizer
        assert opt is not None
        orig = opt.step

        def spy(*a: Any, _i: int = i, _orig: Any = orig, **k: Any) -> Any:
            seen.append((_i, {id(p) for p in learner.parameters() if p.grad is not None}))
            return _orig(*a, **k)

        opt.step = spy
    learner.train_step((x, y), stage)
    assert [i for i, _ in seen] == [0, 1, 2]
    for i, with_grad in seen:
        assert with_grad == own[i], f"block {i}'s optimizer saw foreign or missing gradients"

    # The reference update, computed independently on the copy.
    hs, h = [], x
    for blk in ref.blocks:
        h = blk(h.detach())
        hs.append(h)
    head = ref.blocks[-1].head
    assert head is not None
    logits = head(hs[-1].flatten(1))
    e = (torch.softmax(logits, 1) - F.one_hot(y, 10).float()).detach() / len(y)
    expected = {}
    for k, blk in enumerate(ref.blocks):
        params = list(blk.parameters())
        if k < 2:
            assert blk.feedback is not None
            grads = torch.autograd.grad(
                hs[k], params, (e @ blk.feedback).view_as(hs[k]), retain_graph=True
            )
        else:
            grads = torch.autograd.grad(F.cross_entropy(logits, y), params)
        for (name, p), g in zip(blk.named_parameters(), grads, strict=True):
            expected[f"layers.{k}.{name}"] = p.detach() - 0.1 * g
    got = dict(learner.named_parameters())
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name
    for blk in learner.blocks:
        assert int(blk.body[3].num_batches_tracked) == 1  # one forward per step, BN moved once
    assert all(p.grad is None for p in learner.parameters())


def test_dfa_epochs_caps_the_block_phase() -> None:
    seed_everything(0)
    r = localearn.fit(
        "cafo",
        "digits",
        arch="cnn:8-16",
        learner_options={"blocks": "dfa", "dfa_epochs": 2},
        epochs=6,
        patience=2,
        progress=False,
        seed=0,
        batch_size=256,
    )
    dfa = [h for h in r["history"] if h["unit"] == "dfa"]
    assert len(dfa) == 2  # the unit's own budget (Stage.max_epochs), not the trainer's cap of 6
    assert r["units"][0]["unit"] == "dfa" and r["units"][0]["epochs"] == 2


# ------------------------------------------------------------------------------ random blocks
def test_random_blocks_stay_frozen() -> None:
    learner = _learner()
    before = {
        k: v.clone()
        for k, v in learner.state_dict().items()
        if k.startswith(("layers.0.", "layers.1.", "layers.2."))
    }
    assert all(not p.requires_grad for b in learner.blocks for p in b.parameters())
    assert [s.name for s in learner.stages()] == ["predictor0", "predictor1", "predictor2"]
    x, y = _digits_batch()
    for stage in learner.stages():
        for _ in range(3):
            learner.start_epoch(stage, 1, 1)
            learner.train_step((x, y), stage)
    after = learner.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"
    assert len(learner.optimizers()) == 3  # the predictors only


# ------------------------------------------------------------------------------------- cache
def test_feature_cache_is_exact_and_invalidated_when_blocks_change() -> None:
    learner = _learner()
    x, y = _digits_batch(96)
    stage = _stage(learner, "predictor2")
    learner.start_epoch(stage, 1, 1)
    learner.train_step((x, y), stage)
    learner.start_epoch(stage, 1, 1)
    learner.train_step((x.flip(0), y.flip(0)), stage)  # same rows, another order: all hits
    assert learner.cache.hits == 96 and learner.cache.rows == 96
    learner.eval()
    with torch.no_grad():
        direct = learner.blocks[2](learner.blocks[1](learner.blocks[0](x)))
        mixed = torch.cat([x[:10], x[:5] + 1.0])  # 10 hits, 5 misses
        cached = learner._features(mixed, [0, 1, 2], training=False)
        assert torch.equal(cached[:10], direct[:10])
        with torch.no_grad():
            learner.blocks[1].body[0].weight.mul_(2.0)  # any change of a block drops the memo
        fresh = learner._features(x, [0, 1, 2], training=False)
    assert not torch.equal(fresh, direct)
    assert learner.cache.rows == 96 and learner.cache.hits == 0


def test_feature_cache_turns_itself_off_under_augmentation() -> None:
    for augment, expect_on in ((None, True), (lambda x: x + 0.01 * torch.randn_like(x), False)):
        data = load_dataset("digits", None)
        assert isinstance(data, ImageData)
        data.augment = augment
        seed_everything(0)
        learner = CaFo(arch="cnn:4-8", input_shape=data.input_shape, num_classes=10)
        Trainer(
            learner, data, TrainConfig(epochs=4, patience=10, progress=False, batch_size=128)
        ).fit()
        assert learner._train_cache_on is expect_on


def test_feature_cache_memory_cap() -> None:
    cache = FeatureCache(max_bytes=10 * 8 * 4)  # room for 10 rows of 8 floats
    x = torch.randn(25, 3)
    out = cache.lookup(x, "t", lambda v: v.repeat(1, 3)[:, :8])
    assert cache.rows == 10 and torch.equal(out, x.repeat(1, 3)[:, :8])
    again = cache.lookup(x, "t", lambda v: v.repeat(1, 3)[:, :8])
    assert cache.hits == 10 and torch.equal(again, out)


# ----------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"blocks": "trained"}, "blocks"),
        ({"predictor_loss": "hinge"}, "predictor_loss"),
        ({"aggregate": "vote"}, "aggregate"),
        ({"lam": -1.0}, "lam"),
        ({"block_lr": 0.0}, "block_lr"),
        ({"dfa_epochs": 0, "blocks": "dfa"}, "dfa_epochs"),
        ({"dfa_epochs": 3}, "dfa_epochs"),
        ({"arch": "gcn:16x2"}, "cnn"),
    ],
)
def test_bad_options_are_rejected(options: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        CaFo(**{"arch": "cnn:4-8", **options}, input_shape=(1, 8, 8), num_classes=10)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"no option 'block_epochs'.*dfa_epochs"):
        localearn.fit("cafo", "digits", learner_options={"block_epochs": 3}, progress=False)


# ----------------------------------------------------------------------------- real accuracy
@pytest.mark.parametrize(
    ("options", "bar"),
    [
        ({}, 0.90),
        ({"predictor_loss": "mse"}, 0.95),
        ({"predictor_loss": "sparsemax"}, 0.92),
        ({"blocks": "dfa"}, 0.92),
    ],
)
def test_accuracy_on_digits(options: dict, bar: float) -> None:
    r = localearn.fit(
        "cafo",
        "digits",
        arch="cnn:16-32",
        learner_options=options,
        epochs=15,
        patience=3,
        progress=False,
        seed=0,
    )
    m = r["metrics"]
    assert m["test_accuracy"] >= bar, (options, m["test_accuracy"])
    per_block = [
        m["per_layer"][f"layer{k}"]["test_accuracy"] for k in range(2)
    ]  # run.json diagnostics
    assert all(acc > 0.5 for acc in per_block)
    units = [u["unit"] for u in r["units"]]
    assert units == (["dfa"] if options.get("blocks") == "dfa" else []) + [
        "predictor0",
        "predictor1",
    ]
    if options.get("predictor_loss") == "mse":  # solved in one pass: a one-epoch unit budget
        assert all(u["best_epoch"] == 1 and u["epochs"] == 1 for u in r["units"])
        assert m["data_passes"] == 2
