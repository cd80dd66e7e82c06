"""What a run is scored on: the task's validation loss and metric.

The Trainer knows three tasks; a learner declares its own (``learner.task``) and returns, from
``evaluate_batch``, scores and targets in the task's form:

* ``classification``: class scores ``(B, C)`` and labels; loss = cross-entropy, metric =
  ``accuracy`` (higher is better).
* ``link``: edge probabilities ``(E,)`` and 0/1 edge labels; loss = binary cross-entropy,
  metric = ``roc_auc`` (``sklearn.metrics.roc_auc_score``, higher is better).
* ``autoencoder``: reconstructions and the inputs they reconstruct; loss = metric = ``mse``
  (mean squared error per element, lower is better).

Classification and the autoencoder score batch by batch (sample-weighted means); ROC-AUC is a
ranking statistic, so the link task scores every edge of the split at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from localearn.errors import ConfigError
from localearn.utils import to_device


@dataclass(frozen=True)
class Task:
    """A task's name, its metric and the metric's direction."""

    name: str
    metric: str
    higher_is_better: bool

    @torch.no_grad()
    def evaluate(self, learner: Any, data: Any, split: str, batch_size: int, device: torch.device,
                 stage: Any = None) -> dict[str, float]:
        """Loss, metric and sample count of ``learner`` on ``split`` (``stage``: a unit's scores)."""
        learner.eval()
        if self.name == "link":
            parts = [learner.evaluate_batch(to_device(b, device), stage) for b in data.eval_batches(split, batch_size)]
            p = torch.cat([s for s, _ in parts]).float()
            y = torch.cat([t for _, t in parts]).float()
            return {"loss": float(F.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), y)),
                    "roc_auc": _roc_auc(p, y), "samples": int(y.numel())}
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        for batch in data.eval_batches(split, batch_size):
            scores, y = learner.evaluate_batch(to_device(batch, device), stage)
            totals += self.batch_totals(scores, y)
        loss_sum, metric_sum, total = totals.tolist()  # one read per evaluation, not per batch
        return {"loss": loss_sum / max(total, 1), self.metric: metric_sum / max(total, 1), "samples": int(total)}

    def batch_totals(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[loss sum, metric sum, rows]`` of one batch on the device (classification: CE and
        correct rows; autoencoder: MSE per row, twice); the pipeline's last rank uses it too."""
        n = y.shape[0]
        if self.name == "autoencoder":
            mse = F.mse_loss(scores.float(), y.float()).double() * n
            return torch.stack([mse, mse, mse.new_tensor(float(n))])
        ce = F.cross_entropy(scores.float(), y).double() * n  # the mean in fp32, as a sum in fp64
        return torch.stack([ce, (scores.argmax(1) == y).sum().double(), ce.new_tensor(float(n))])


def _roc_auc(p: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    if not torch.isfinite(p).all():
        return float("nan")
    return float(roc_auc_score(y.cpu().numpy(), p.cpu().numpy()))


TASKS = {
    "classification": Task("classification", "accuracy", True),
    "link": Task("link", "roc_auc", True),
    "autoencoder": Task("autoencoder", "mse", False),
}


def evaluate(learner: Any, data: Any, split: str, batch_size: int, device: torch.device,
             stage: Any = None) -> dict[str, float]:
    """Loss, the task's metric and sample count on ``split`` (the Trainer and ``localearn eval``)."""
    return get_task(learner.task).evaluate(learner, data, split, batch_size, device, stage)


def get_task(name: str) -> Task:
    """The task called ``name``; a ConfigError lists the valid ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


@torch.no_grad()
def layer_accuracies(learner: Any, data: Any, split: str, batch_size: int, device: torch.device) -> dict[str, float]:
    """Each layer's own accuracy on ``split`` (classification learners with per-layer scores)."""
    learner.eval()
    correct: dict[str, int] = {}
    total = 0
    for batch in data.eval_batches(split, batch_size):
        batch = to_device(batch, device)
        x, y = learner.split_batch(batch)
        per_layer = learner.layer_scores(x)
        if not per_layer:
            return {}
        for name, scores in per_layer.items():  # graph learners score every node: select the split's
            correct[name] = correct.get(name, 0) + int((learner.select(scores, batch).argmax(1) == y).sum())
        total += len(y)
    return {name: c / max(total, 1) for name, c in correct.items()}
