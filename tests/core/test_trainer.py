from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from stop_after import StopAfter

import localearn
from localearn import Callback, TrainConfig, Trainer, create_learner, load_dataset
from localearn.errors import ConfigError


def _run(tmp: Path | None = None, **kw: object) -> dict:
    args = {"epochs": 3, "batch_size": 64, "progress": False, "seed": 0, "arch": "mlp:2x64"}
    args.update(kw)
    return localearn.fit("mono_forward", "digits", out=tmp, **args)  # type: ignore[arg-type]


def test_mono_forward_default_run_is_accurate(tmp_path: Path) -> None:
    """The README's quick-start (digits, mlp:2x1000, 20 epochs per stage): accuracy >= 0.95."""
    r = localearn.fit("mono_forward", "digits", out=tmp_path, progress=False, seed=0)
    assert r["metrics"]["test_accuracy"] >= 0.95
    saved = json.loads((tmp_path / "run.json").read_text())
    for key in ("algorithm", "dataset", "arch", "seed", "config", "versions", "device", "history", "metrics"):
        assert key in saved
    m = saved["metrics"]
    for key in ("test_accuracy", "val_accuracy", "train_seconds", "samples_per_second", "data_passes",
                "peak_saved_activation_bytes", "peak_rss_bytes", "cuda_peak_allocated_bytes", "per_layer"):
        assert key in m
    assert m["cuda_peak_allocated_bytes"] is None  # CPU run
    assert m["energy"]["method"] == "not_measured"
    assert set(m["per_layer"]) == {"layer0", "layer1"}
    assert all(v["test_accuracy"] > 0.5 for v in m["per_layer"].values())
    assert m["data_passes"] == sum(u["epochs"] for u in saved["units"])


def test_backprop_digits_accuracy() -> None:
    r = localearn.fit("backprop", "digits", arch="mlp:2x256", epochs=20, progress=False, seed=0)
    assert r["metrics"]["test_accuracy"] >= 0.95


def test_same_seed_same_run_different_seed_different_run() -> None:
    a, b, c = _run(seed=3), _run(seed=3), _run(seed=4)
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    assert [h["val_loss"] for h in a["history"]] != [h["val_loss"] for h in c["history"]]


def test_greedy_units_and_joint_unit() -> None:
    g = _run(epochs=2)
    assert [u["unit"] for u in g["units"]] == ["layer0", "layer1"]
    assert g["metrics"]["data_passes"] == 4
    j = _run(epochs=2, schedule="joint")
    assert [u["unit"] for u in j["units"]] == ["network"]
    assert j["metrics"]["data_passes"] == 2


class _Spy(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.events.append("start")

    def on_epoch_end(self, trainer: Trainer, stage: object, record: dict) -> None:
        self.events.append(f"epoch:{record['unit']}")

    def on_fit_end(self, trainer: Trainer, result: dict) -> None:
        self.events.append("end")


def test_early_stopping_and_best_restore() -> None:
    """With patience 1 and a huge lr the unit stops early and the best state is restored."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    learner = create_learner("bp", arch="mlp:1x32", input_shape=data.input_shape, num_classes=10)
    spy = _Spy()
    trainer = Trainer(learner, data, TrainConfig(epochs=30, patience=2, lr=0.5, optimizer="sgd", progress=False),
                      callbacks=[spy])
    r = trainer.fit()
    unit = r["units"][0]
    assert unit["stopped_early"] and unit["epochs"] < 30
    best = min(h["val_loss"] for h in r["history"])
    assert unit["best_val_loss"] == pytest.approx(best)
    # The restored model is the best epoch's, not the last one's.
    assert r["metrics"]["val_loss"] == pytest.approx(best, rel=1e-5)
    assert spy.events[0] == "start" and spy.events[-1] == "end" and "epoch:network" in spy.events


def test_ctrl_c_leaves_a_resumable_run_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    full = _run(tmp_path / "full", epochs=2)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _run(out, epochs=2, callbacks=[StopAfter(3)])
    partial = json.loads((out / "run.json").read_text())
    assert partial["status"] == "interrupted" and len(partial["history"]) == 3
    resumed = localearn.fit(None, None, out=out, resume=True, progress=False)
    assert resumed["status"] == "complete"
    assert [h["val_loss"] for h in resumed["history"]] == [h["val_loss"] for h in full["history"]]
    assert resumed["metrics"]["test_accuracy"] == full["metrics"]["test_accuracy"]
    assert resumed["metrics"]["data_passes"] == full["metrics"]["data_passes"] == 4


def test_resume_errors(tmp_path: Path) -> None:
    with pytest.raises(localearn.LocalearnError, match="nothing to resume"):
        localearn.fit(None, None, out=tmp_path, resume=True)
    _run(tmp_path / "r", epochs=1)
    with pytest.raises(ConfigError, match="holds a mono_forward run, not backprop"):
        localearn.fit("backprop", None, out=tmp_path / "r", resume=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(localearn.LocalearnError, match="not a readable localearn checkpoint"):
        localearn.fit(None, None, out=tmp_path / "junk", resume=True)


def test_bad_trainer_config() -> None:
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        TrainConfig(lr=-1.0).validate()
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        TrainConfig(optimizer="rmsprop").validate()
    with pytest.raises(ConfigError, match="unknown training option"):
        localearn.fit("mf", "digits", epochz=3)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        if not torch.cuda.is_available():
            localearn.fit("mf", "digits", device="cuda")
        else:
            raise ConfigError("no CUDA GPU (skipped on GPU machines)")
