"""The study report on a real (tiny) study directory: digits, mlp:2x32, 2 epochs at batch 32, seeds 0-2.

Three arms (backprop, mono_forward, mono_forward with prediction=sum) train for real through
``localearn.fit``; one MF run is then marked diverged, study.json is written as the study runner
writes it, and an Optuna journal holds a few trials per arm for the optimisation-history plot.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from localearn.studies import load_report, write_report

import localearn
from localearn.errors import LocalearnError
from localearn.runrecord import RunRecord

SEEDS = [0, 1, 2]
ARMS = {
    "digits/backprop": ("backprop", {}),
    "digits/mono_forward": ("mono_forward", {}),
    "digits/mf_sum": ("mono_forward", {"prediction": "sum"}),
}


def _arm(key: str, algo: str, options: dict[str, Any]) -> dict[str, Any]:
    bp = key == "digits/backprop"
    return {"dataset": "digits", "arm": key.split("/")[1], "algo": algo, "arch": "mlp:2x32", "options": options,
            "baseline_of": None if bp else "digits/backprop", "is_baseline": bp, "optuna_study": f"tiny/{key}",
            "sampler": {"class": "TPESampler", "seed": 1, "args": {}},
            "tuning": {"trials_complete": 3, "trials_failed": 0, "seconds": 1.5,
                       "best_params": {"lr": 1e-3}, "best_value": 0.9},
            "final": {"config": {"lr": 1e-3}, "epochs_per_unit": None}}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared 2-core machine
    try:
        for key, (algo, options) in ARMS.items():
            for seed in SEEDS:
                localearn.fit(algo, "digits", arch="mlp:2x32", learner_options=options, epochs=2, batch_size=32,
                              seed=seed, progress=False, out=root / "runs" / key / f"seed-{seed}")
    finally:
        torch.set_num_threads(threads)
    # a diverged run keeps a (meaningless) accuracy of 0: it must be listed, never averaged in
    bad = root / "runs/digits/mono_forward/seed-2/run.json"
    run = json.loads(bad.read_text())
    run["status"], run["metrics"]["test_accuracy"] = "diverged", 0.0
    run["diverged"] = {"unit": "layer0", "layer": "layer0", "epoch": 2, "reason": "loss is nan"}
    bad.write_text(json.dumps(run))
    study = {"name": "tiny", "spec": {}, "storage": "journal:journal.log", "protocol": "own_convergence",
             "stop_rule": {"metric": "auto", "patience": 20, "cap_epochs_per_unit": 2, "restore_best": True,
                           "min_delta": 0.0},
             "pruner": "none", "optuna_version": optuna.__version__, "localearn_version": "0.1.0", "seeds": SEEDS,
             "arms": {k: _arm(k, a, o) for k, (a, o) in ARMS.items()}, "status": "complete"}
    (root / "study.json").write_text(json.dumps(study))
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(root / "journal.log")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for i, key in enumerate(ARMS):
        s = optuna.create_study(study_name=f"tiny/{key}", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=i))
        s.optimize(lambda t: 1 - abs(t.suggest_float("lr", 1e-5, 1e-2, log=True) - 1e-3), n_trials=4)
    write_report(root)
    return root


def _acc(root: Path, key: str, seed: int) -> float:
    return json.loads((root / "runs" / key / f"seed-{seed}" / "run.json").read_text())["metrics"]["test_accuracy"]


def test_summary_deltas_are_the_paired_run_json_differences(study_dir: Path) -> None:
    summary = load_report(study_dir)
    assert set(summary) == set(ARMS)
    mf = summary["digits/mono_forward"]
    assert mf["n"] == 2 and mf["n_failed"] == 1 and mf["paired_seeds"] == [0, 1]
    want = statistics.fmean(100 * (_acc(study_dir, "digits/mono_forward", s) - _acc(study_dir, "digits/backprop", s))
                            for s in (0, 1))
    assert mf["delta_pp"] == pytest.approx(want, abs=1e-9)
    assert mf["test_accuracy_mean"] == pytest.approx(
        statistics.fmean(_acc(study_dir, "digits/mono_forward", s) for s in (0, 1)))
    lo, hi = mf["delta_ci95"]
    assert lo <= mf["delta_pp"] <= hi
    for key in ("digits/mono_forward", "digits/mf_sum"):
        e = summary[key]
        assert e["verdict"] in ("EQUIVALENT", "DIFFERENT", "INCONCLUSIVE")
        assert e["train_seconds_ratio"] > 0 and e["holm_family_size"] == 2
        d = e["decomposition"]  # time ratio = epochs ratio x cost-per-epoch ratio, exactly
        assert e["train_seconds_ratio"] == pytest.approx(d["epochs_ratio"] * d["seconds_per_epoch_ratio"], rel=1e-9)
        assert e["p_diff_holm"] >= e["p_diff"]
        assert e["energy_ratio"] is None and e["energy_method"] == ["not_measured"]
    # MF holds one layer's input and output; backprop holds every activation of the same trunk
    assert 0 < mf["peak_saved_bytes_ratio"] < 1
    bp = summary["digits/backprop"]
    assert bp["is_baseline"] and bp["n"] == 3 and "delta_pp" not in bp
    assert bp["tuning"]["trials_complete"] == 3


def test_failed_run_is_listed_and_excluded(study_dir: Path) -> None:
    mf = load_report(study_dir)["digits/mono_forward"]
    assert mf["failed"] == [{"seed": 2, "status": "diverged",
                             "reason": "unit layer0, layer layer0, epoch 2: loss is nan"}]
    assert mf["seeds"] == [0, 1] and mf["test_accuracy_mean"] > 0.3
    report = (study_dir / "report.md").read_text()
    assert "digits/mono_forward seed 2: diverged" in report
    assert "Protocol A, own convergence" in report and "patience 20" in report


def test_results_csv_has_one_row_per_arm_and_seed(study_dir: Path) -> None:
    with (study_dir / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ARMS) * len(SEEDS)
    row = next(r for r in rows if r["arm"] == "backprop" and r["seed"] == "1")
    assert float(row["test_accuracy"]) == pytest.approx(_acc(study_dir, "digits/backprop", 1))
    assert row["status"] == "complete" and row["energy_method"] == "not_measured"
    assert float(row["seconds_per_pass"]) == pytest.approx(float(row["train_seconds"]) / float(row["data_passes"]))
    assert [r["status"] for r in rows if r["arm"] == "mono_forward"] == ["complete", "complete", "diverged"]


def test_plots_are_png_images(study_dir: Path) -> None:
    names = ["accuracy_vs_cost.png", "memory.png", "learning_curves.png", "optimization_history_digits.png"]
    for name in names:
        data = (study_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f"]({name})" in (study_dir / "report.md").read_text()


def test_a_storage_named_but_unreadable_is_an_error_and_rewrites_nothing(study_dir: Path, tmp_path: Path) -> None:
    """Issue #23: a wrong storage (a missing journal, a wrong password) exited 0 with the old PNG left."""
    before = {p.name: p.stat().st_mtime_ns for p in study_dir.iterdir() if p.is_file()}
    with pytest.raises(LocalearnError, match=r"journal file .*nope\.log does not exist"):
        write_report(study_dir, storage=str(tmp_path / "nope.log"))
    assert {p.name: p.stat().st_mtime_ns for p in study_dir.iterdir() if p.is_file()} == before


def test_without_a_storage_the_old_history_plot_is_removed(study_dir: Path, tmp_path: Path) -> None:
    journal = study_dir / "journal.log"
    journal.rename(tmp_path / "journal.log")
    try:
        summary = write_report(study_dir)
        assert "digits/mf_sum" in summary
        assert not (study_dir / "optimization_history_digits.png").exists()  # never a stale plot
        assert "no journal.log in the study directory" in (study_dir / "report.md").read_text()
    finally:
        (tmp_path / "journal.log").rename(journal)
        write_report(study_dir)  # leave the module's directory as the fixture built it


def test_load_report_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(LocalearnError, match="no report at"):
        load_report(tmp_path)
    with pytest.raises(LocalearnError, match="not a study directory"):
        write_report(tmp_path)


def _fake_run(acc: float, seconds: float, joules: float | None, method: str = "nvml_energy_counter") -> dict[str, Any]:
    energy = ({"method": method, "train_joules": joules, "train_adjusted_joules": joules / 2}
              if joules is not None else {"method": "not_measured", "reason": "no GPU"})
    return {"status": "complete", "arch": "mlp:2x32", "stop_rule": {"metric": "val_loss"},
            "metrics": {"test_accuracy": acc, "val_accuracy": acc, "epochs": 4, "data_passes": 4,
                        "train_seconds": seconds, "peak_saved_activation_bytes": 1000, "peak_rss_bytes": 1,
                        "cuda_peak_allocated_bytes": 4096 if joules else None, "energy": energy,
                        "per_layer": {"layer0": {"peak_saved_activation_bytes": 1000}}},
            "history": [{"global_epoch": e, "val_accuracy": acc} for e in (1, 2, 3, 4)]}


def test_energy_ratio_carries_its_method_and_mixed_methods_give_none(tmp_path: Path) -> None:
    from localearn.studies.report import build_summary
    from localearn.studies.results import make_row

    study = {"arms": {k: _arm(k, a, o) for k, (a, o) in ARMS.items()}, "seeds": [0, 1, 2]}
    rows = []
    for seed in range(3):
        # mono_forward: the same accuracy to 0.01 pp, twice the time, 1.5x the joules (same meter)
        rows.append(make_row("digits/backprop", study["arms"]["digits/backprop"], seed,
                             RunRecord.from_dict(_fake_run(0.9 + seed / 100, 10.0, 100.0)), Path("x")))
        rows.append(make_row("digits/mono_forward", study["arms"]["digits/mono_forward"], seed,
                             RunRecord.from_dict(_fake_run(0.9001 + seed / 100, 20.0, 150.0)), Path("x")))
        rows.append(make_row("digits/mf_sum", study["arms"]["digits/mf_sum"], seed,
                             RunRecord.from_dict(_fake_run(0.95, 20.0, 150.0, method="rapl")), Path("x")))
    summary = build_summary(study, rows)
    mf, mfs = summary["digits/mono_forward"], summary["digits/mf_sum"]
    assert mf["energy_ratio"] == pytest.approx(1.5) and mf["energy_method"] == ["nvml_energy_counter"]
    assert mf["energy_adjusted_ratio"] == pytest.approx(1.5)
    assert mf["train_seconds_ratio"] == pytest.approx(2.0)
    assert mf["decomposition"]["joules_per_pass_ratio"] == pytest.approx(1.5)
    assert mf["delta_pp"] == pytest.approx(0.01) and mf["verdict"] == "EQUIVALENT"
    assert mfs["verdict"] == "DIFFERENT"  # 3.0-5.0 pp apart, still so after Holm over two contrasts
    assert mfs["energy_ratio"] is None and mfs["energy_method"] == ["nvml_energy_counter", "rapl"]
    assert mf["cuda_peak_ratio"] == pytest.approx(1.0)
    from localearn.studies.plots import write_plots

    study["arms"] = {k: v for k, v in study["arms"].items() if k != "digits/mf_sum"}  # one meter: energy axis
    kept = [r for r in rows if r.key != "digits/mf_sum"]
    files, notes = write_plots(tmp_path, study, kept, build_summary(study, kept), None)
    assert files == ["accuracy_vs_cost.png", "memory.png", "learning_curves.png"]
    assert "no journal.log" in notes[0] and (tmp_path / "memory.png").stat().st_size > 10_000


def test_too_few_pairs_gives_no_verdict() -> None:
    from localearn.studies.report import build_summary
    from localearn.studies.results import make_row

    study = {"arms": {k: _arm(k, a, o) for k, (a, o) in list(ARMS.items())[:2]}, "seeds": [0, 1]}
    fake = RunRecord.from_dict
    rows = [make_row("digits/backprop", study["arms"]["digits/backprop"], 0, fake(_fake_run(0.9, 1.0, None)),
                     Path("x")),
            make_row("digits/backprop", study["arms"]["digits/backprop"], 1, None, Path("missing")),
            make_row("digits/mono_forward", study["arms"]["digits/mono_forward"], 0, fake(_fake_run(0.8, 1.0, None)),
                     Path("x")),
            make_row("digits/mono_forward", study["arms"]["digits/mono_forward"], 1, fake(_fake_run(0.8, 1.0, None)),
                     Path("x"))]
    mf = build_summary(study, rows)["digits/mono_forward"]
    assert mf["n_paired"] == 1 and mf["verdict"] == "INSUFFICIENT_PAIRS" and mf["delta_ci95"] is None
    assert mf["delta_pp"] == pytest.approx(-10.0)
