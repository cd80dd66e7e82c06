"""A study optimises the task's metric in its direction, runs grid and fixed arms with one budget, and
trains every arm at the study's precision (issue #22 item 4, issue #20 item 1), end to end on digits.

Autoencoder: Counter-Current Learning (Kao & Hariharan, NeurIPS 2024) and its backprop twin, each
a 2-point lr grid, MSE minimised; classification: Mono-Forward and backprop fixed at their recipes,
one trial each, at bf16.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import torch
from localearn.studies.report import build_summary
from localearn.studies.results import make_row
from localearn.studies.runner import run_study
from optuna.trial import TrialState

from localearn.runrecord import RunRecord

AE = {"study": {"name": "ae", "dataset": "digits", "task": "autoencoder", "margin": 0.01, "epochs": 2,
                "seeds": [0, 1], "batch_size": 32},
      "arms": [{"algo": "backprop", "arch": "mlp:64-16-64", "grid": {"lr": [0.003, 0.03]},
                "fixed": {"optimizer": "sgd", "momentum": 0.9}},
               {"algo": "ccl", "arch": "mlp:64-16-64", "grid": {"lr": [0.003, 0.03]},
                "fixed": {"optimizer": "sgd", "momentum": 0.9}}]}


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def _journal(out: Path) -> optuna.storages.BaseStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "journal.log")))


def test_an_autoencoder_study_minimises_mse_and_runs_each_grid_point_once(tmp_path: Path) -> None:
    summary = run_study(AE, out=tmp_path, progress=False)
    record = json.loads((tmp_path / "study.json").read_text())
    assert record["objective"] == {"task": "autoencoder", "metric": "mse", "direction": "minimize",
                                   "precision": "fp32"}
    for key, arm in record["arms"].items():
        study = optuna.load_study(study_name=arm["optuna_study"], storage=_journal(tmp_path))
        assert study.direction == optuna.study.StudyDirection.MINIMIZE and arm["sampler"]["class"] == "GridSampler"
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(study.trials) == len(done) == 2  # each point once, nothing else
        assert sorted(t.params["lr"] for t in done) == [0.003, 0.03]
        assert all(t.value == t.user_attrs["val_mse"] for t in done)
        assert arm["final"]["params"] == min(done, key=lambda t: t.value).params  # the lower MSE wins
        runs = [RunRecord.load(p) for p in sorted((tmp_path / "runs" / key).glob("seed-*"))]
        assert [(r.task, r.seed, r.complete) for r in runs if r] == [("autoencoder", 0, True), ("autoencoder", 1, True)]
        for seed in (0, 1):  # each final run at the arm's best point
            run = json.loads((tmp_path / "runs" / key / f"seed-{seed}" / "run.json").read_text())
            assert run["config"]["lr"] == arm["final"]["params"]["lr"] and run["config"]["optimizer"] == "sgd"
    ccl = summary["digits/counter_current"]
    mse = {k: [RunRecord.load(tmp_path / "runs" / k / f"seed-{s}").test for s in (0, 1)]  # type: ignore[union-attr]
           for k in ("digits/counter_current", "digits/backprop")}
    assert ccl["metric"] == "mse" and ccl["test_accuracy_mean"] is None and ccl["delta_pp"] is None
    assert ccl["delta"] == pytest.approx(sum(mse["digits/counter_current"]) / 2 - sum(mse["digits/backprop"]) / 2)
    assert ccl["test_ratio"] == pytest.approx(sum(mse["digits/counter_current"]) / sum(mse["digits/backprop"]))
    with (tmp_path / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert "test_mse" in rows[0] and "test_accuracy" not in rows[0]
    report = (tmp_path / "report.md").read_text()
    assert "validation mse (lower is better)" in report and "test mse" in report


def test_a_fixed_bf16_study_trains_every_arm_at_its_recipe_and_the_studys_precision(tmp_path: Path) -> None:
    spec = {"study": {"name": "fx", "dataset": "digits", "precision": "bf16", "epochs": 1, "seeds": [0, 1]},
            "arms": [{"algo": "mono_forward", "arch": "mlp:1x32", "search": "fixed", "fixed": {"lr": 0.002}}]}
    summary = run_study(spec, out=tmp_path, progress=False)
    record = json.loads((tmp_path / "study.json").read_text())
    assert record["spec"]["trials"] == 1 and record["objective"]["precision"] == "bf16"
    for key in ("digits/backprop", "digits/mono_forward"):
        assert record["arms"][key]["search"] == "fixed" and record["arms"][key]["tuning"]["trials_complete"] == 1
        assert summary[key]["precision"] == ["bf16"]
        for seed in (0, 1):
            run = json.loads((tmp_path / "runs" / key / f"seed-{seed}" / "run.json").read_text())
            assert run["update"]["precision"] == "bf16" and run["config"]["precision"] == "bf16"
            assert run["recipe"]["epochs"]["source"] == "study"
    mf = json.loads((tmp_path / "runs/digits/mono_forward/seed-0/run.json").read_text())
    bp = json.loads((tmp_path / "runs/digits/backprop/seed-0/run.json").read_text())
    assert mf["config"]["lr"] == 0.002 and mf["recipe"]["lr"]["source"] == "study"
    assert bp["recipe"]["lr"]["source"] != "study"  # the backprop twin at its own recipe
    assert "precision** bf16 for every arm" in (tmp_path / "report.md").read_text()


def _fake(task: str, score: float) -> RunRecord:
    metric = {"autoencoder": "mse", "link": "roc_auc"}[task]
    return RunRecord.from_dict({"status": "complete", "task": task, "metrics": {
        f"test_{metric}": score, "train_seconds": 1.0, "epochs": 1, "data_passes": 1}})


@pytest.mark.parametrize(("task", "arm", "bp", "better"), [
    ("autoencoder", 0.10, 0.20, "arm"), ("autoencoder", 0.30, 0.20, "baseline"),
    ("link", 0.95, 0.80, "arm"), ("link", 0.70, 0.80, "baseline")])
def test_a_difference_is_better_in_the_metrics_direction(task: str, arm: float, bp: float, better: str) -> None:
    metric, direction = ("mse", "minimize") if task == "autoencoder" else ("roc_auc", "maximize")
    study = {"objective": {"task": task, "metric": metric, "direction": direction}, "margin": 0.01,
             "arms": {"d/bp": {"dataset": "d", "arm": "bp", "algo": "backprop", "is_baseline": True},
                      "d/x": {"dataset": "d", "arm": "x", "algo": "ccl", "baseline_of": "d/bp"}}}
    rows = [make_row(k, study["arms"][k], s, _fake(task, (arm if k == "d/x" else bp) + s / 1000), Path("x"))
            for k in study["arms"] for s in range(4)]
    entry = build_summary(study, rows)["d/x"]
    scale = 1 if task == "autoencoder" else 100
    assert entry["verdict"] == "DIFFERENT" and entry["better"] == better
    assert entry["delta"] == pytest.approx(scale * (arm - bp)) and entry["delta_unit"] == ("" if scale == 1 else "pp")
