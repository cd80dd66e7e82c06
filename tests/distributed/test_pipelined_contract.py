"""The pipeline contract in one process: every learner and variant that declares a pipeline
scores, position by position, what its own ``predict`` / ``unit_scores`` score (issue #13).

The pipeline's evaluation sums the voting positions' scores as they travel and applies the
learner's rule at the end; run here in one process over all positions, the result must give the
same log-probabilities as the learner's own scores (hence the same loss and argmax), for the
prediction and for every training unit, after a few training steps. The 2-rank runs in
``test_pipeline.py`` cover the transport; this covers the options they do not run.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from localearn.data import load_dataset
from localearn.distributed.pipelined import Pipelined
from localearn.registry import create_learner, get_algorithm, list_algorithms
from localearn.trainer import make_optimizer_factory
from localearn.utils import seed_everything

NOPROP = {"arch": "cnn:8-16", "T": 3, "width": 16, "hidden": 16, "inference": "mean"}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("mono_forward", {"arch": "mlp:3x32"}),
    ("mono_forward", {"arch": "mlp:3x32", "prediction": "sum", "schedule": "joint"}),
    ("forward_forward", {"arch": "mlp:3x32"}),
    ("forward_forward", {"arch": "mlp:3x32", "schedule": "joint", "goodness": "mean"}),
    ("cafo", {"arch": "cnn:4-8"}),
    ("cafo", {"arch": "cnn:4-8", "aggregate": "logits"}),
    ("cafo", {"arch": "cnn:4-8", "predictor_loss": "sparsemax"}),
    ("cafo", {"arch": "mlp:2x32", "predictor_loss": "mse"}),
    ("cafo", {"arch": "mlp:2x32", "predictor_loss": "ce_fullbatch"}),
    ("noprop", NOPROP),
    ("noprop", {**NOPROP, "schedule": "greedy"}),
    ("noprop", {**NOPROP, "blocks_per_step": "all"}),
    ("forward_gnn", {"arch": "gcn:16x2"}),
    ("forward_gnn", {"arch": "sage:16x3", "eval_aggregation": "last"}),
    ("forward_gnn", {"arch": "gcn:16x2", "variant": "ff_la", "schedule": "joint"}),
    ("forward_gnn", {"arch": "gcn:16x2", "variant": "ff_vn"}),
]


def _learner_and_data(algo: str, options: dict[str, Any]) -> tuple[Pipelined, Any]:
    seed_everything(0)
    data = load_dataset("karate" if algo == "forward_gnn" else "digits")
    learner = create_learner(algo, input_shape=data.input_shape, num_classes=data.num_classes, **options)
    assert isinstance(learner, Pipelined) and learner.pipeline_refusal == ""
    learner.configure_optimizers(make_optimizer_factory("adam", 1e-2, 0.0))
    gen = torch.Generator().manual_seed(0)
    for stage in learner.stages():  # a few steps per unit, so that scores are not at their init
        for epoch in (1, 2):
            learner.start_epoch(stage, epoch, 2)
            for i, batch in enumerate(data.train_batches(64, gen)):
                learner.train_step(batch, stage)
                if i == 2:
                    break
    learner.eval()
    return learner, next(iter(data.eval_batches("test", 128)))


def _through_positions(learner: Pipelined, batch: Any, stage: Any) -> torch.Tensor:
    votes = learner.pipeline_votes(stage)
    h, ctx = learner.pipeline_eval_input(batch)
    total = None
    for p in range(max(votes) + 1):
        h, s = learner.pipeline_eval(p, h, ctx, stage, p in votes)
        if s is not None:
            total = s if total is None else total + s
    assert total is not None
    return learner.pipeline_scores(total, stage)


@pytest.mark.parametrize(("algo", "options"), CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(CASES)])
def test_positions_score_what_the_learner_scores(algo: str, options: dict[str, Any]) -> None:
    learner, batch = _learner_and_data(algo, options)
    for stage in (None, *learner.stages()):
        with torch.no_grad():
            ref, y = learner.evaluate_batch(batch, stage)
            got = _through_positions(learner, batch, stage)
        assert got.shape == ref.shape
        assert torch.allclose(F.log_softmax(got.float(), 1), F.log_softmax(ref.float(), 1), atol=1e-4), stage
        assert float(F.cross_entropy(ref.float(), y)) == pytest.approx(float(F.cross_entropy(got.float(), y)), abs=1e-4)


def test_every_learner_either_pipelines_or_says_why() -> None:
    """A registered learner that does not derive from Pipelined refuses with its own reason."""
    for name in list_algorithms():
        cls = get_algorithm(name)
        if not issubclass(cls, Pipelined):
            assert cls.pipeline_refusal and "declare" not in cls.pipeline_refusal, name
        assert cls.capabilities()["pipeline_refusal"] == cls.pipeline_refusal  # what `localearn algos` shows
