"""Honest outcomes: a non-finite loss, parameter or validation metric ends the run as diverged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from localearn.algorithms.mono_forward import MonoForward
from torch import Tensor

import localearn
from localearn import Callback, Stage, TrainConfig, Trainer, load_dataset
from localearn.outcome import EXIT_DIVERGED

FAST = {"progress": False, "seed": 0, "batch_size": 64}


def _assert_diverged(r: dict[str, Any], unit: str, layer: str | None, epoch: int, reason: str) -> None:
    assert r["status"] == "diverged"
    d = r["diverged"]
    assert (d["unit"], d["layer"], d["epoch"]) == (unit, layer, epoch)
    assert reason in d["reason"]
    m = r["metrics"]
    assert m["test_accuracy"] is None and m["val_accuracy"] is None and m["test_loss"] is None


def test_chained_learner_nan_run_exits_3_and_says_diverged(tmp_path: Path) -> None:
    """`localearn train --algo forward_forward --lr 1e9` (SGD): NaN in the first epoch."""
    out = tmp_path / "ff"
    res = subprocess.run([sys.executable, "-m", "localearn.cli", "train", "--algo", "forward_forward",
                          "--arch", "mlp:2x64", "--lr", "1e9", "--epochs", "3", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, timeout=600)
    assert res.returncode == EXIT_DIVERGED == 3, res.stderr
    assert "DIVERGED" in res.stdout and "unit network, layer layer0, epoch 1" in res.stdout
    assert "not reported" in res.stdout
    run = json.loads((out / "run.json").read_text())
    _assert_diverged(run, "network", "layer0", 1, "non-finite training loss (loss/layer0 = nan)")
    assert run["best_state_metrics"] is None  # no finite epoch was ever validated
    again = localearn.fit(None, None, out=out, resume=True, progress=False)  # stays diverged
    assert again["status"] == "diverged" and again["diverged"] == run["diverged"]


def test_greedy_learner_nan_run_is_diverged() -> None:
    r = localearn.fit("mono_forward", "digits", arch="mlp:2x64", lr=1e30, epochs=3, **FAST)
    _assert_diverged(r, "layer0", "layer0", 1, "non-finite training loss")
    assert r["units"] == []


def test_graph_learner_nan_run_is_diverged() -> None:
    """ForwardGNN on KarateClub: epoch 1 trains but validates to NaN, epoch 2's loss is NaN."""
    r = localearn.fit("forward_gnn", "karate", lr=1e30, epochs=3, **FAST)
    _assert_diverged(r, "layer0", "layer0", 2, "non-finite training loss")
    assert r["history"][0]["val_loss"] != r["history"][0]["val_loss"]  # NaN: never the best state
    assert r["best_state_metrics"] is None


class _Poison(Callback):
    """Writes a NaN into layer1's projection after the last step of layer1's second epoch."""

    def on_batch_end(self, trainer: Trainer, stage: Stage, logs: dict[str, float]) -> None:
        per_epoch = trainer.data.num_batches(trainer.config.batch_size)
        st = trainer.state
        if stage.name == "layer1" and st.epoch_in_stage == 1 and st.steps % per_epoch == 0:
            with torch.no_grad():
                trainer.learner.layers[1].proj.weight[0, 0] = float("nan")


def test_nan_parameter_stops_the_unit_and_the_best_state_is_reported_apart() -> None:
    r = localearn.fit("mono_forward", "digits", arch="mlp:2x64", epochs=4, callbacks=[_Poison()], **FAST)
    _assert_diverged(r, "layer1", "layer1", 2, "non-finite parameter")
    assert [u["unit"] for u in r["units"]] == ["layer0"]  # the first unit finished normally
    best = r["best_state_metrics"]
    assert best["unit"] == "layer1" and best["best_epoch"] == 1
    assert best["test_accuracy"] > 0.2 and "not a result" in best["note"]  # chance: 0.1 (one epoch)


class _NaNScores(MonoForward):
    def scores(self, x: Tensor, stage: Stage | None = None) -> Tensor:  # every unit's scores are NaN
        return torch.full((x.shape[0], self.num_classes), float("nan"))


def test_a_validation_metric_that_never_becomes_finite_is_divergence() -> None:
    data = load_dataset("digits")
    torch.manual_seed(0)
    learner = _NaNScores("mlp:1x32", data.input_shape, data.num_classes)
    r = Trainer(learner, data, TrainConfig(epochs=2, progress=False)).fit()
    _assert_diverged(r, "layer0", None, 2, "validation val_loss never became finite in 2 epoch(s)")
