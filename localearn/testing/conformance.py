"""Conformance checks for every :class:`~localearn.learner.LocalLearner`.

Fixtures are real data: a fixed batch of scikit-learn's digits for image learners, KarateClub
(bundled with torch_geometric) for graph learners. A learner class may adjust its fixture with
class attributes: ``test_arch`` (a small spec) and ``test_options`` (constructor kwargs).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from localearn.data.graphs import karate_club_data
from localearn.learner import LocalLearner
from localearn.registry import get_algorithm
from localearn.trainer import make_optimizer_factory
from localearn.update import UpdatePolicy, centralize_gradients
from localearn.utils import seed_everything


@dataclass
class Fixture:
    """A small learner, its optimizers configured, its update policy, and one fixed training batch."""

    learner: LocalLearner
    batch: Any
    inputs: Any
    num_classes: int
    policy: UpdatePolicy


def _digits_batch(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    return (x - 0.3) / 0.4, torch.tensor(d.target[:n], dtype=torch.long)


def _graph_batch() -> Any:
    return karate_club_data()


def make_fixture(name: str, seed: int = 0, **overrides: Any) -> Fixture:
    """Build learner ``name`` on its small architecture with a fixed real-data batch."""
    cls = get_algorithm(name)
    seed_everything(seed)
    options = {"arch": cls.test_arch, **getattr(cls, "test_options", {}), **overrides}
    if cls.supports_graphs:
        batch = _graph_batch()
        learner = cls(input_shape=(batch.num_features,), num_classes=int(batch.y.max()) + 1, **options)
        inputs = batch
    else:
        x, y = _digits_batch()
        learner = cls(input_shape=tuple(x.shape[1:]), num_classes=10, **options)
        batch, inputs = (x, y), x
    opt = learner.default_optimizer
    learner.configure_optimizers(make_optimizer_factory(opt["name"], opt["lr"], opt.get("weight_decay", 0.0)))
    policy = UpdatePolicy(**learner.update_defaults).attach(learner)  # as the Trainer does
    return Fixture(learner, batch, inputs, learner.num_classes, policy)


def train_all(fx: Fixture, steps: int) -> list[float]:
    """``steps`` passes of every stage over the fixed batch; the loss of each step."""
    losses = []
    for _ in range(steps):
        for stage in fx.learner.stages():
            fx.learner.start_epoch(stage, 1, 1)  # each pass over the fixed batch: one epoch
            fx.policy.start_epoch(fx.learner.optimizers(), 1, 1)
            losses.append(float(fx.learner.train_step(fx.batch, stage)["loss"]))
            fx.policy.finish_step()  # a network-wide clip steps here, as in the Trainer
    return losses


@contextlib.contextmanager
def _spy_on_steps(learner: LocalLearner, record: Callable[[int, set[str]], None]) -> Iterator[None]:
    """Wrap every optimizer's ``step`` to record which parameters hold a gradient at that moment."""
    names = {id(p): n for n, p in learner.named_parameters()}
    originals = []
    for i, opt in enumerate(learner.optimizers()):
        original = opt.step

        def spy(*args: Any, _i: int = i, _orig: Any = original, **kwargs: Any) -> Any:
            with_grad = {names[id(p)] for p in learner.parameters() if p.grad is not None}
            record(_i, with_grad)
            return _orig(*args, **kwargs)

        opt.step = spy  # type: ignore[method-assign]
        originals.append((opt, original))
    try:
        yield
    finally:
        for opt, original in originals:
            opt.step = original  # type: ignore[method-assign]


def check_no_gradient_crosses_layers(name: str) -> None:
    """At each optimizer step only that optimizer's parameters hold gradients; none remain after."""
    fx = make_fixture(name)
    learner = fx.learner
    names = {id(p): n for n, p in learner.named_parameters()}
    owned = [{names[id(p)] for g in opt.param_groups for p in g["params"]} for opt in learner.optimizers()]
    seen: list[tuple[int, set[str]]] = []
    with _spy_on_steps(learner, lambda i, s: seen.append((i, s))):
        train_all(fx, 1)
    assert seen, f"{name}: train_step never stepped an optimizer"
    for i, with_grad in seen:
        foreign = with_grad - owned[i]
        assert not foreign, (
            f"{name}: when optimizer {i} stepped, parameters it does not own had gradients: "
            f"{sorted(foreign)[:5]} (a gradient crossed a layer boundary)"
        )
    leftover = [n for n, p in learner.named_parameters() if p.grad is not None]
    assert not leftover, f"{name}: gradients left behind after train_step: {leftover[:5]}"


def check_loss_falls(name: str, steps: int = 30) -> None:
    """Repeated steps on one fixed batch lower the training loss."""
    fx = make_fixture(name)
    losses = train_all(fx, steps)
    k = max(len(losses) // 5, 1)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < first, f"{name}: loss did not fall on a fixed batch ({first:.4f} -> {last:.4f})"


def _predict(fx: Fixture) -> torch.Tensor:
    fx.learner.eval()
    with torch.no_grad():
        return fx.learner.predict(fx.inputs)


def check_deterministic(name: str) -> None:
    """Two runs with the same seed give bit-identical weights and predictions."""
    runs = []
    for _ in range(2):
        fx = make_fixture(name, seed=123)
        seed_everything(7)
        train_all(fx, 3)
        runs.append((fx.learner.state_dict(), _predict(fx)))
    (sd_a, p_a), (sd_b, p_b) = runs
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), f"{name}: {key} differs between identically seeded runs"
    assert torch.equal(p_a, p_b), f"{name}: predictions differ between identically seeded runs"


def check_state_dict_round_trip(name: str) -> None:
    """A state dict saved and loaded into a fresh learner reproduces its predictions."""
    fx = make_fixture(name, seed=1)
    train_all(fx, 2)
    buf = io.BytesIO()
    torch.save(fx.learner.state_dict(), buf)
    buf.seek(0)
    fresh = make_fixture(name, seed=2)
    fresh.learner.load_state_dict(torch.load(buf, weights_only=True))
    seed_everything(5)
    a = _predict(fx)
    seed_everything(5)
    b = _predict(fresh)
    assert torch.allclose(a, b), f"{name}: predictions changed after a state_dict round trip"


def check_predict_shape(name: str) -> None:
    """``predict`` returns finite scores of shape (B, C)."""
    fx = make_fixture(name)
    scores = _predict(fx)
    n = fx.batch.num_nodes if hasattr(fx.batch, "num_nodes") else fx.batch[0].shape[0]
    expected = (n, fx.num_classes)
    assert scores.shape == expected, f"{name}: predict returned {tuple(scores.shape)}, expected {expected}"
    assert torch.isfinite(scores).all(), f"{name}: predict returned non-finite scores"


def check_runs_without_triton(name: str) -> None:
    """Training and prediction work on CPU with Triton unimportable and kernels forced to torch."""
    saved = {k: sys.modules[k] for k in list(sys.modules) if k == "triton" or k.startswith("triton.")}
    env = os.environ.get("LOCALEARN_KERNELS")
    try:
        for k in saved:
            del sys.modules[k]
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
        os.environ["LOCALEARN_KERNELS"] = "torch"
        fx = make_fixture(name)
        train_all(fx, 1)
        assert torch.isfinite(_predict(fx)).all(), f"{name}: non-finite scores without Triton"
    finally:
        del sys.modules["triton"]
        sys.modules.update(saved)
        if env is None:
            os.environ.pop("LOCALEARN_KERNELS", None)
        else:
            os.environ["LOCALEARN_KERNELS"] = env


def _as_the_policy_would(policy: UpdatePolicy, layer: Any, grads: dict[int, Tensor]) -> None:
    """Centralise and clip ``grads`` (parameter id -> gradient) in place as ``policy`` would treat
    this layer's own gradient alone: one clip per clip group of the layer's optimizer."""
    if policy.grad_centralization:
        centralize_gradients(grads.values())
    if policy.grad_clip > 0 and layer.optimizer is not None:
        groups: dict[str, list[Tensor]] = {}
        for group in layer.optimizer.param_groups:
            key = str(group.get("clip_group", "all"))
            groups.setdefault(key, []).extend(grads[id(p)] for p in group["params"] if id(p) in grads)
        for members in groups.values():
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in members]))
            coef = (policy.grad_clip / (norm + 1e-6)).clamp(max=1.0)
            for g in members:
                g.mul_(coef)


def check_declared_coupling(name: str) -> None:
    """A learner that says it is block-local updates every layer from its own local loss alone.

    Each ``LocalLayer.forward_loss`` call is wrapped to take the gradient of that loss with
    respect to the layer's own parameters (in the same call, so side effects such as running
    statistics happen once), transformed as the learner's update policy transforms a layer's own
    gradient (centralisation, a clip per clip group of the layer); every optimizer step must then
    use exactly that gradient. A learner whose update mixes in anything else (a clip coefficient
    over other layers, a global loss) must set ``block_local = False`` and say what couples it in
    ``coupling``.
    """
    fx = make_fixture(name)
    learner = fx.learner
    if not learner.block_local:
        assert learner.coupling.strip(), f"{name}: block_local is False but coupling does not say why"
        return
    expected: dict[int, Tensor | None] = {}
    restore = []
    for layer in learner.local_layers:
        original = layer.forward_loss
        params = [p for p in layer.parameters() if p.requires_grad]

        def wrapped(x: Any, ctx: Any, _orig: Any = original, _params: list[Any] = params,
                    _layer: Any = layer) -> Any:
            h, loss = _orig(x, ctx)
            if loss.requires_grad and _params:
                grads = torch.autograd.grad(loss, _params, retain_graph=True, allow_unused=True)
                own = {id(p): g.detach().clone() for p, g in zip(_params, grads, strict=True) if g is not None}
                expected.update({id(p): own.get(id(p)) for p in _params})
                _as_the_policy_would(fx.policy, _layer, own)
            return h, loss

        layer.forward_loss = wrapped  # type: ignore[method-assign]
        restore.append((layer, original))
    names = {id(p): n for n, p in learner.named_parameters()}
    mismatches: list[str] = []

    def record(_i: int, _with_grad: set[str]) -> None:
        for p in learner.parameters():
            if p.grad is None or id(p) not in expected:
                continue
            ref = expected[id(p)]
            if ref is None or not torch.allclose(p.grad, ref, rtol=1e-5, atol=1e-7):
                mismatches.append(names[id(p)])

    try:
        with _spy_on_steps(learner, record):
            train_all(fx, 2)
    finally:
        for layer, original in restore:
            layer.forward_loss = original  # type: ignore[method-assign]
    assert not mismatches, (
        f"{name}: declares block_local, but these parameters stepped with a gradient other than "
        f"their own layer's local-loss gradient: {sorted(set(mismatches))[:5]} (declare "
        f"block_local = False and describe the coupling)"
    )
