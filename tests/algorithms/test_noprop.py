"""NoProp (arXiv 2503.24322): schedule, loss terms, locality, inference switch, options, accuracy."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from localearn.algorithms.noprop.common import NoPropHead, class_medoids
from localearn.algorithms.noprop.continuous import MonotoneGamma, NoPropCT
from localearn.algorithms.noprop.schedule import cosine_alpha_bar, discrete_schedule, kl_to_prior

import localearn
from localearn.errors import ConfigError
from localearn.layer import Context
from localearn.registry import create_learner, get_algorithm
from localearn.testing.conformance import _digits_batch
from localearn.trainer import make_optimizer_factory
from localearn.utils import seed_everything

SMALL = {"arch": "cnn:8-16", "input_shape": (1, 8, 8), "num_classes": 10, "T": 4, "width": 16, "hidden": 16}


def _learner(**kw):
    opts = {**SMALL, **kw}
    learner = create_learner("noprop", **opts)
    learner.configure_optimizers(make_optimizer_factory("adamw", 1e-3, 1e-3))
    return learner


# ---------------------------------------------------------------------------------- schedule
def test_cosine_schedule_matches_hand_computation() -> None:
    bar = cosine_alpha_bar(10)
    for t in (0, 1, 5, 9):
        hand = math.cos(math.pi / 2 * (1 - t / 10 + 0.008) / 1.008) ** 2
        assert bar[t].item() == pytest.approx(hand, rel=1e-12, abs=1e-15)
    assert bar[5].item() == pytest.approx(0.4937668427, rel=1e-8)
    unclamped = math.cos(math.pi / 2 * 0.008 / 1.008) ** 2
    assert unclamped == pytest.approx(0.999845, abs=1e-6)  # > 0.999, so the clamp is active
    assert bar[10].item() == 0.999 < 1.0
    assert torch.all(bar[1:] > bar[:-1])  # signal increases towards the label


def test_snr_weights_are_finite_and_hand_computed() -> None:
    s = discrete_schedule(10, eta=0.1)
    assert torch.isfinite(s.weight).all() and torch.isfinite(s.snr).all()
    assert s.snr[10].item() == pytest.approx(999.0)
    snr9 = s.alpha_bar[9].item() / (1 - s.alpha_bar[9].item())
    assert s.weight[10].item() == pytest.approx(10 * 0.1 / 2 * (999.0 - snr9))
    assert s.weight[10].item() == pytest.approx(482.17998, rel=1e-6)
    assert s.weight[1].item() == pytest.approx(0.5 * 0.024682532418, rel=1e-8)
    # η scales the weight linearly
    assert torch.allclose(discrete_schedule(10, eta=0.3).weight, 3 * s.weight)


def test_posterior_coefficients_hand_values_and_marginals() -> None:
    s = discrete_schedule(10)
    t = 4
    ab_prev, ab = s.alpha_bar[t - 1].item(), s.alpha_bar[t].item()
    alpha = ab_prev / ab
    assert s.a[t].item() == pytest.approx(math.sqrt(ab) * (1 - alpha) / (1 - ab_prev))
    assert s.b[t].item() == pytest.approx(math.sqrt(alpha) * (1 - ab) / (1 - ab_prev))
    assert s.c[t].item() == pytest.approx((1 - ab) * (1 - alpha) / (1 - ab_prev))
    # q(z_{t-1}|y) pushed through the posterior gives q(z_t|y): mean √ᾱ_t u, variance 1 − ᾱ_t.
    for t in range(1, 11):
        mean = s.a[t] + s.b[t] * s.alpha_bar[t - 1].sqrt()
        var = s.b[t] ** 2 * (1 - s.alpha_bar[t - 1]) + s.c[t]
        assert mean.item() == pytest.approx(s.alpha_bar[t].sqrt().item(), rel=1e-9)
        assert var.item() == pytest.approx(1 - s.alpha_bar[t].item(), rel=1e-9)


def test_kl_term() -> None:
    u = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert kl_to_prior(u, 0.2).item() == pytest.approx(0.5 * 0.2 * (25 + 1) / 2)
    y = torch.tensor([0, 1, 1])
    eps = torch.randn(3, 2)
    for trainable, expected in ((True, 0.5 * 0.5 * (25 + 1 + 1) / 3), (False, 0.0)):
        head = NoPropHead(u.clone(), trainable, 2, alpha_bar_T=0.9, alpha_bar_0=0.5)
        scores, loss = head.forward_loss(eps, Context(y, 2))
        ce = F.cross_entropy(scores, y).item()
        assert loss.item() - ce == pytest.approx(expected, abs=1e-6)  # onehot: no KL term


def test_block_l2_term_uses_the_snr_weight() -> None:
    learner = _learner()
    x, y = _digits_batch(16)
    embed = learner.head.embedding()
    u = embed[y]
    t = 3
    z = learner.alpha_bar[t - 1].sqrt() * u + (1 - learner.alpha_bar[t - 1]).sqrt() * torch.randn_like(u)
    weight = float(learner.weight[t])
    ctx = Context(y, 10, {"z": z, "embed": embed, "target": u, "weight": weight})
    block = learner.layers[t - 1]
    logits, loss = block.forward_loss(x, ctx)
    hand = weight * ((F.softmax(logits, 1) @ embed - u) ** 2).sum(1).mean()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    sched = discrete_schedule(4, 0.1)
    assert weight == pytest.approx(4 * 0.1 / 2 * (sched.snr[3] - sched.snr[2]).item(), rel=1e-6)


# ------------------------------------------------------------------------------- locality
def test_no_block_gets_gradient_from_another_blocks_loss() -> None:
    learner = _learner(embedding="learned")
    x, y = _digits_batch(16)
    embed = learner.head.embedding()
    u = embed[y]
    ctx = Context(y, 10, {"z": torch.randn_like(u), "embed": embed, "target": u, "weight": 1.0})
    _, loss = learner.layers[1].forward_loss(x, ctx)
    loss.backward()
    for i, layer in enumerate(learner.layers):
        has_grad = [p.grad is not None for p in layer.parameters()]
        assert all(has_grad) if i == 1 else not any(has_grad), f"layer {i}"


def test_greedy_stage_updates_only_its_block_and_the_head() -> None:
    seed_everything(0)
    learner = _learner(schedule="greedy")
    stage = learner.stages()[1]
    assert stage.layers == (1, 4)
    before = [[p.detach().clone() for p in layer.parameters()] for layer in learner.layers]
    learner.start_epoch(stage, 1, 1)
    learner.train_step(_digits_batch(32), stage)
    for i, layer in enumerate(learner.layers):
        changed = any(not torch.equal(a, b) for a, b in zip(before[i], layer.parameters(), strict=True))
        assert changed == (i in (1, 4)), f"layer {i} changed={changed}"


def test_block_noise_comes_from_its_own_stream_not_the_global_one() -> None:
    """Unrelated global RNG states between steps change nothing, and the global stream is untouched."""
    learners = []
    for global_seed in (1, 2):
        seed_everything(0)
        learner = _learner(blocks_per_step="all")
        stage = learner.stages()[0]
        learner.start_epoch(stage, 1, 1)
        for _ in range(2):
            torch.manual_seed(global_seed)
            state = torch.get_rng_state()
            learner.train_step(_digits_batch(32), stage)
            assert torch.equal(torch.get_rng_state(), state)
        learners.append(dict(learner.state_dict()))
    assert int(learners[0]["step_count"]) == 2 and all(torch.equal(v, learners[1][k]) for k, v in learners[0].items())


def test_checkpoints_without_the_noise_streams_still_load() -> None:
    old = {k: v for k, v in _learner().state_dict().items() if k not in ("noise_seed", "step_count")}
    _learner().load_state_dict(old)  # strict: the learner keeps its own stream


def test_prototypes_are_first_batch_class_medoids() -> None:
    learner = _learner(embedding="prototype")
    x, y = _digits_batch(64)
    stage = learner.stages()[0]
    seed_everything(0)
    learner.train_step((x, y), stage)
    assert bool(learner.head.ready)
    flat = x.flatten(1)
    members = flat[y == 3]
    medoid = members[torch.cdist(members, members).sum(1).argmin()]
    assert torch.allclose(class_medoids(x, y, 10)[3], medoid)
    # after one head step the row has moved only a little from the medoid
    assert (learner.head.embed[3].detach() - medoid).abs().max() < 1e-2


# ------------------------------------------------------------------------------- inference
def test_mean_inference_is_deterministic_and_stochastic_is_not() -> None:
    x, y = _digits_batch(32)
    for mode, same in (("mean", True), ("stochastic", False)):
        seed_everything(0)
        learner = _learner(inference=mode)
        learner.train_step((x, y), learner.stages()[0])
        learner.eval()
        with torch.no_grad():
            a, b = learner.predict(x), learner.predict(x)
        assert torch.equal(a, b) == same, mode


def test_inference_option_is_recorded_in_run_json(tmp_path) -> None:
    localearn.fit("noprop", "digits", arch="cnn:8-16", out=tmp_path, epochs=1, progress=False,
                  learner_options={"T": 2, "width": 16, "hidden": 16, "inference": "mean"})
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["learner_options"]["inference"] == "mean"
    assert set(run["metrics"]["per_layer"]) == {"layer0", "layer1", "layer2"}


# --------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("algo", "options", "needle"),
    [
        ("noprop", {"inference": "greedy"}, "inference"),
        ("noprop", {"embedding": "random"}, "embedding"),
        ("noprop", {"blocks_per_step": "some"}, "blocks_per_step"),
        ("noprop", {"T": 0}, "T"),
        ("noprop", {"eta": -1.0}, "eta"),
        ("noprop", {"max_signal": 1.0}, "max_signal"),
        ("noprop", {"arch": "mlp:2x100"}, "cnn"),
        ("noprop", {"schedule": "layerwise"}, "schedule"),
        ("noprop_ct", {"solver": "rk4"}, "solver"),
        ("noprop_ct", {"weighting": "elbo"}, "weighting"),
        ("noprop_fm", {"weighting": "snr"}, "weighting"),
        ("noprop_fm", {"steps": 0}, "steps"),
    ],
)
def test_bad_options_raise_config_error(algo: str, options: dict, needle: str) -> None:
    kw = {"arch": "cnn:8-16", "input_shape": (1, 8, 8), "num_classes": 10, **options}
    with pytest.raises(ConfigError, match=needle):
        create_learner(algo, **kw)


def test_continuous_variants_are_not_block_local() -> None:
    for name in ("noprop_ct", "noprop_fm"):
        cls = get_algorithm(name)
        assert cls.block_local is False and "local in time only" in cls.paper
    assert get_algorithm("noprop_dt").block_local is True


def test_ct_schedule_is_monotone_with_fixed_ends_and_autograd_slope() -> None:
    torch.manual_seed(0)
    g = MonotoneGamma()
    with torch.no_grad():
        g.w3.normal_()
    t = torch.linspace(0, 1, 11)
    vals = g(t).detach()
    assert vals[0].item() == pytest.approx(0.0, abs=1e-6) and vals[-1].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(vals[1:] >= vals[:-1])
    learner = create_learner("noprop_ct", arch="cnn:8-16", input_shape=(1, 8, 8), num_classes=10,
                             width=16, hidden=16, steps=3, solver="heun")
    assert isinstance(learner, NoPropCT)
    net = learner.net
    tt = torch.tensor([0.3], dtype=torch.float64)
    net.double()
    _, slope = net.gamma_and_slope(tt, create_graph=False)
    h = 1e-6
    fd = (net.gamma(tt + h) - net.gamma(tt - h)) / (2 * h)
    assert slope.item() == pytest.approx(fd.item(), rel=1e-5)
    assert slope.item() < 0  # γ falls, so SNR = exp(−γ) rises towards the label
    learner.float().eval()
    with torch.no_grad():
        assert learner.predict(_digits_batch(8)[0]).shape == (8, 10)


@pytest.mark.parametrize("weighting", ["logsnr", "snr"])
def test_ct_l2_term_weight_is_dlogsnr_or_the_papers_snr_slope(weighting: str) -> None:
    learner = create_learner("noprop_ct", arch="cnn:8-16", input_shape=(1, 8, 8), num_classes=10,
                             width=16, hidden=16, weighting=weighting)
    net = learner.net.eval()  # no dropout, so the only random draws are t, ε and z_1's noise
    assert not net.out.weight.any() and not net.out.bias.any()  # neutral head at the start
    x, y = _digits_batch(16)
    torch.manual_seed(0)
    logits, loss = net.forward_loss(x, Context(y, 10))
    torch.manual_seed(0)
    t = (torch.rand(()) + torch.arange(16) / 16).remainder(1.0)
    eps, noise1 = torch.randn(16, 10), torch.randn(16, 10)
    with torch.no_grad():
        g = net.gamma(t)
        h = 1e-3
        slope = (net.gamma(t + h) - net.gamma(t - h)) / (2 * h)  # γ′ by central differences
        weight = -slope if weighting == "logsnr" else -slope * torch.exp(-g)
        u = torch.eye(10)[y]
        bar = torch.sigmoid(-g)[:, None]
        ref_logits = net(x, bar.sqrt() * u + (1 - bar).sqrt() * eps, t)
        l2 = 0.5 * (weight * ((F.softmax(ref_logits, 1) - u) ** 2).sum(1)).mean()
        bar1 = torch.sigmoid(-net.gamma(torch.ones(1)))
        ce = F.cross_entropy(net.out(bar1.sqrt() * u + (1 - bar1).sqrt() * noise1), y)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert loss.item() == pytest.approx((ce + l2).item(), rel=2e-3)


# -------------------------------------------------------------------------------- accuracy
def test_noprop_dt_learns_digits() -> None:
    torch.set_num_threads(1)
    r = localearn.fit("noprop", "digits", arch="cnn:16-32", epochs=6, batch_size=64, seed=0, progress=False,
                      learner_options={"T": 5, "width": 64, "hidden": 32, "inference": "mean",
                                       "blocks_per_step": "all"})
    # measured 0.925 with this seed; chance is 0.1
    assert r["metrics"]["test_accuracy"] > 0.85


# The continuous variants need more steps than DT's test: 12 epochs at batch 64 (~250 Adam steps)
# with the default network; 10 Euler steps at inference (once trained, 4 to 1000 steps score alike).
CONTINUOUS_FIT = {"epochs": 12, "batch_size": 64, "seed": 0, "progress": False, "learner_options": {"steps": 10}}


def test_noprop_ct_learns_digits() -> None:
    torch.set_num_threads(1)
    r = localearn.fit("noprop_ct", "digits", **CONTINUOUS_FIT)
    # measured 0.958 with this seed (0.92-0.96 over seeds 0-2); chance is 0.1. The paper's SNR′
    # weight (weighting="snr") scores 0.19-0.26 here, a random Linear_out 0.61, both (the pre-fix
    # learner) 0.15.
    assert r["metrics"]["test_accuracy"] > 0.85


def test_noprop_fm_learns_digits() -> None:
    torch.set_num_threads(1)
    r = localearn.fit("noprop_fm", "digits", **CONTINUOUS_FIT)
    # measured 0.942 with this seed (0.89-0.94 over seeds 0-2); chance is 0.1. With a randomly
    # initialised Linear_out (the pre-fix learner) this seed scores 0.53.
    assert r["metrics"]["test_accuracy"] > 0.80
