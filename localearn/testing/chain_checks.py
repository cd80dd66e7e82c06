"""Conformance checks of the chain declaration and of the step's host reads.

Every learner declares its chain once (:mod:`localearn.learner`); ``predict``, unit scores,
per-layer scores, pipelined evaluation and pipelined training are derived from it. These checks
run the derivations the way the pipeline does, in one process: the chain is cut at every position,
the layer context crosses the cut through the transport's own packing
(:func:`~localearn.distributed.transport.pack_context`), and the result must equal the uncut one,
for the prediction and every unit's scores, and for a training step's parameters. A learner that
refuses the pipeline (``pipeline_refusal``) is checked uncut only.

The host-read check counts the tensor-to-Python conversions (``item``, ``float``, ``int``,
``bool``, ``tolist``) of a Trainer run of N batches and of 3N: the count must not grow with the
steps (docs/guides/precision.md), unless the learner declares why it reads per step.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from localearn.data.base import ImageData
from localearn.data.graphs import GraphData
from localearn.distributed.transport import pack_context, unpack_context
from localearn.learner import LocalLearner, Stage
from localearn.testing.conformance import make_fixture, train_all
from localearn.trainer import TrainConfig, Trainer
from localearn.utils import seed_everything


def _cut_scores(learner: LocalLearner, x: Any, stage: Stage | None, cut: int) -> Tensor:
    """The chain's scores with positions ``< cut`` on one side and the rest on the other."""
    votes = learner.votes(stage)
    h, ctx = learner.eval_input(x, stage)
    total: Tensor | None = None
    for p in range(max(votes) + 1):
        if p == cut:  # what a pipeline link carries: tensors and plain scalars only
            tensors, scalars = pack_context(ctx)
            ctx = unpack_context(tensors, scalars, learner.num_classes)
        h, s = learner.run_position(p, h, ctx, p in votes)
        if s is not None:
            total = s if total is None else total + s
    assert total is not None, f"{learner.name}: no vote for {stage}"
    return learner.combine(total, stage)


def check_chain_scores(name: str) -> None:
    """Positions partition the layers; predict, unit scores and layer scores come from the chain,
    and a chain cut at any position (the pipeline's evaluation) scores the same."""
    fx = make_fixture(name)
    learner = fx.learner
    train_all(fx, 1)
    learner.eval()
    layers = sorted(i for pos in learner.positions() for i in pos)
    assert layers == list(range(len(learner.layers))), f"{name}: positions {learner.positions()} do not " \
        f"partition its {len(learner.layers)} layers"
    if learner.task != "classification":
        return
    n = len(learner.positions())
    with torch.no_grad():
        for stage in (None, *learner.stages()):
            seed_everything(5)  # stochastic inference (NoProp's sampler) draws the same noise each time
            ref = learner.scores(fx.inputs, stage)
            seed_everything(5)
            same = learner.predict(fx.inputs) if stage is None else learner.unit_scores(fx.inputs, stage)
            assert torch.allclose(ref, same), f"{name}: predict/unit_scores differ from the chain's scores"
            cuts = range(1, max(learner.votes(stage)) + 1) if not learner.pipeline_refusal else ()
            for cut in cuts:
                seed_everything(5)
                got = _cut_scores(learner, fx.inputs, stage, cut)
                assert torch.allclose(F.log_softmax(got.float(), 1), F.log_softmax(ref.float(), 1), atol=1e-5), (
                    f"{name}: the chain cut before position {cut} scores {stage} differently")
        rows = ref.shape[0]
        for key, s in learner.layer_scores(fx.inputs).items():
            assert key in {layer.layer_name for layer in learner.local_layers}, f"{name}: layer score {key!r}"
            assert s.shape == (rows, learner.num_classes), f"{name}: layer {key} scores {tuple(s.shape)}"
    assert n >= 1


def check_chain_training(name: str) -> None:
    """One training step cut at any position (the pipeline's training) changes the parameters
    exactly as the uncut step does."""
    fx = make_fixture(name)
    learner = fx.learner
    if learner.pipeline_refusal or len(learner.positions()) < 2:
        return
    positions = learner.positions()
    for stage in learner.stages():
        last = max(p for p, pos in enumerate(positions) if set(pos) & set(stage.layers))
        for cut in range(1, last + 1):  # two ranks: copies holding the positions before and after the cut
            whole, first, second = (copy.deepcopy(learner) for _ in range(3))
            for copy_ in (whole, first, second):
                copy_.start_epoch(stage, 1, 1)
            fx.policy.attach(whole)
            seed_everything(11)
            whole.train_step(fx.batch, stage)
            fx.policy.finish_step()
            seed_everything(11)
            ctx = first.make_context(fx.batch)
            h = ctx.inputs if ctx.inputs is not None else first.split_batch(fx.batch)[0]
            fx.policy.attach(first)
            h, _ = first.step_positions(h, ctx, stage, positions[:cut])
            tensors, scalars = pack_context(ctx)
            fx.policy.attach(second)
            second.step_positions(h, unpack_context(tensors, scalars, second.num_classes), stage,
                                  positions[cut:last + 1])
            fx.policy.finish_step()
            owner = {str(i): first if p < cut else second for p, pos in enumerate(positions) for i in pos}
            for key, a in whole.state_dict().items():
                parts = key.split(".")
                rank = owner[parts[1]] if parts[0] == "layers" else second  # a layer's own rank
                b = rank.state_dict()[key]
                if a.is_floating_point():
                    assert torch.allclose(a, b, atol=1e-6), f"{name}: unit {stage.name} cut at {cut}: {key} differs"


CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_conversions(*modules: str) -> Iterator[list[int]]:
    """Count tensor-to-Python conversions made inside the block by code of localearn or of
    ``modules`` (module-name prefixes), in ``counter[0]``. Conversions inside torch itself (an
    optimizer reading its CPU step counter) are not the caller's."""
    counter = [0]
    originals = {name: getattr(Tensor, name) for name in CONVERSIONS}
    owners = ("localearn", *modules)

    def wrap(fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if str(sys._getframe(1).f_globals.get("__name__", "")).startswith(owners):
                counter[0] += 1
            return fn(*args, **kwargs)
        return counted

    try:
        for name, fn in originals.items():
            setattr(Tensor, name, wrap(fn))
        yield counter
    finally:
        for name, fn in originals.items():
            setattr(Tensor, name, fn)


def check_no_host_reads_per_step(name: str) -> None:
    """A Trainer run of 3N batches converts no more tensors to Python values than one of N."""
    counts = []
    for batches in (2, 6):
        fx = make_fixture(name)
        learner = fx.learner
        if learner.supports_graphs:
            data: Any = _graph_bundle(fx.batch, batches)
        else:
            x, y = fx.batch
            n = 16 * batches
            data = ImageData("fixture", tuple(x.shape[1:]), 10, x_train=x[:n], y_train=y[:n], x_val=x[:32],
                             y_val=y[:32], x_test=x[:32], y_test=y[:32])
        config = TrainConfig(epochs=1, batch_size=16, progress=False, warmup_steps=0, device="cpu",
                             log_every=10_000, measure_memory=False)
        trainer = Trainer(learner, data, config)
        with count_conversions(type(learner).__module__) as counter:
            trainer.fit()
        counts.append(counter[0])
    declared = getattr(learner, "host_reads", "")
    assert counts[1] <= counts[0] or declared, (
        f"{name}: {counts[1] - counts[0]} more tensor-to-Python conversions for 4 more steps ({counts}); a "
        "step must not read tensors on the host (or the learner declares why in host_reads)")


def _graph_bundle(graph: Any, repeats: int) -> Any:
    """The fixture graph served ``repeats`` times per epoch (a graph learner steps once per graph)."""
    class Repeated(GraphData):
        def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
            for _ in range(repeats):
                yield self.graph

        def num_batches(self, batch_size: int) -> int:
            return repeats

    return Repeated("fixture", (graph.num_features,), int(graph.y.max()) + 1, graph=graph)
