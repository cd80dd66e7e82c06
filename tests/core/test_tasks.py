"""No training loop outside the Trainer: link prediction, the CCL autoencoder and CaFo's DFA unit
are ordinary runs with the task's metric, the stopping rule, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from stop_after import StopAfter

import localearn
from localearn import LocalLayer
from localearn.errors import ConfigError
from localearn.run import load_run


def _interrupted_then_resumed(out: Path, algo: str, dataset: str, cut: int, **kw: Any) -> dict[str, Any]:
    with pytest.raises(KeyboardInterrupt):
        localearn.fit(algo, dataset, out=out, callbacks=[StopAfter(cut)], **kw)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    return localearn.fit(None, None, out=out, resume=True, progress=False)


def test_link_prediction_trains_through_the_trainer_and_resumes(tmp_path: Path) -> None:
    """ForwardGNN link prediction on KarateClub: greedy units stop on validation ROC-AUC."""
    kw = {"task": "link", "arch": "gcn:16x2", "epochs": 6, "patience": 3, "seed": 0, "progress": False,
          "learner_options": {"link_objective": "ff"}}
    full = localearn.fit("forward_gnn", "karate", out=tmp_path / "full", **kw)
    assert full["status"] == "complete" and full["task"] == "link"
    assert full["stop_rule"]["metric"] == "val_acc"  # the task's metric: ROC-AUC
    assert [u["unit"] for u in full["units"]] == ["layer0", "layer1"]
    assert full["metrics"]["test_roc_auc"] >= 0.65, full["metrics"]["test_roc_auc"]  # measured 0.698; chance 0.5
    assert "val_roc_auc" in full["history"][0] and full["metrics"]["test_accuracy"] is None
    resumed = _interrupted_then_resumed(tmp_path / "cut", "forward_gnn", "karate", 3, **kw)
    assert resumed["history"] == full["history"]
    assert resumed["metrics"]["test_roc_auc"] == full["metrics"]["test_roc_auc"]


def test_backprop_gnn_link_baseline_is_a_trainer_run() -> None:
    r = localearn.fit("backprop_gnn", "karate", task="link", arch="gcn:16x2", epochs=5, seed=0, progress=False)
    assert r["status"] == "complete" and [u["unit"] for u in r["units"]] == ["network"]
    assert 0.0 <= r["metrics"]["test_roc_auc"] <= 1.0


def test_ccl_autoencoder_trains_through_the_trainer_and_resumes(tmp_path: Path) -> None:
    """`localearn train --algo ccl --task autoencoder`: validation MSE drives the stopping rule."""
    kw = {"task": "autoencoder", "arch": "mlp:64-32-16-32", "epochs": 4, "seed": 0, "progress": False,
          "batch_size": 64}
    full = localearn.fit("counter_current", "digits", out=tmp_path / "full", **kw)
    assert full["status"] == "complete" and full["task"] == "autoencoder"
    mse = full["metrics"]["test_mse"]
    learner, data, _ = load_run(tmp_path / "full")
    x = torch.cat([b[0] for b in data.eval_batches("test", 512)])
    with torch.no_grad():
        assert F.mse_loss(learner.reconstruct(x), x).item() == pytest.approx(mse, rel=1e-5)
        mean_image = F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x).item()
    assert mse < 0.75 * mean_image, (mse, mean_image)  # it learned more than the mean image
    resumed = _interrupted_then_resumed(tmp_path / "cut", "counter_current", "digits", 2, **kw)
    assert resumed["history"] == full["history"] and resumed["metrics"]["test_mse"] == mse


def test_a_task_the_learner_does_not_train_is_refused() -> None:
    with pytest.raises(ConfigError, match="mono_forward trains only the classification task"):
        localearn.fit("mono_forward", "digits", task="link")
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"):
        localearn.fit("forward_gnn", "karate", task="segmentation")


def test_cafo_dfa_steps_go_through_local_layer_train_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DFA block update is a LocalLayer.train_step (detach, own loss, own optimizer)."""
    calls: list[str] = []
    original = LocalLayer.train_step

    def spy(self: LocalLayer, x: torch.Tensor, ctx: Any) -> Any:
        calls.append(self.layer_name)
        assert not x.requires_grad or x.grad_fn is None
        return original(self, x, ctx)

    monkeypatch.setattr(LocalLayer, "train_step", spy)
    r = localearn.fit("cafo", "digits", arch="cnn:4-8", epochs=1, seed=0, progress=False, batch_size=256,
                      learner_options={"blocks": "dfa", "dfa_epochs": 1})
    assert r["status"] == "complete" and r["units"][0]["unit"] == "dfa"
    from localearn import load_dataset

    per_epoch = load_dataset("digits").num_batches(256)
    assert calls[: 2 * per_epoch] == ["layer0", "layer1"] * per_epoch  # both blocks, every step
