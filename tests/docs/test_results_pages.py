"""Results on the docs pages and the README are generated from committed JSON, never typed.

``docs/tools/results_pages.py`` rewrites every section between ``<!-- results:begin KEY -->``
and ``<!-- results:end KEY -->`` from ``benchmarks/results``; these tests regenerate a copy of
the docs and fail when a number on a page differs from its JSON.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from docsutil import DOCS, REPO, tool

pages = tool("results_pages")
readers = tool("results_readers")


def _copy_docs(tmp: Path) -> Path:
    shutil.copytree(DOCS, tmp / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "README.md").is_file():
        shutil.copy(REPO / "README.md", tmp / "README.md")
    return tmp


def test_pages_match_their_json(tmp_path: Path) -> None:
    root = _copy_docs(tmp_path)
    changed = pages.regenerate(root, results_root=REPO)
    assert not changed, ("these sections differ from benchmarks/results; run "
                         f"`python docs/tools/results_pages.py` and commit: {changed}")
    for page in (root / "docs").rglob("*.md"):  # the regenerated copy equals the committed page
        assert page.read_text() == (REPO / page.relative_to(root)).read_text(), page


def test_a_number_typed_over_is_caught(tmp_path: Path) -> None:
    root = _copy_docs(tmp_path)
    page = root / "docs" / "learners" / "mono_forward.md"
    text = page.read_text()
    head, tail = text.split("<!-- results:begin learner:mono_forward -->", 1)
    assert "0.9794" in tail, "the MNIST default run's accuracy is on Mono-Forward's page"
    page.write_text(head + "<!-- results:begin learner:mono_forward -->" + tail.replace("0.9794", "0.9894", 1))
    changed = pages.regenerate(root, results_root=REPO, write=False)
    assert changed == ["docs/learners/mono_forward.md: learner:mono_forward"]


def test_every_committed_result_is_on_the_results_page() -> None:
    records, skipped = readers.load_records(REPO)
    shown = (DOCS / "results.md").read_text()
    for path in sorted((REPO / "benchmarks" / "results").rglob("*.json")):
        rel = path.relative_to(REPO).as_posix()
        assert f"`{rel}`" in shown, f"{rel} is not on docs/results.md"
    assert {r.source for r in records} | {s.split("`")[1] for s in skipped} >= {
        p.relative_to(REPO).as_posix() for p in (REPO / "benchmarks" / "results").rglob("*.json")}


def test_an_unknown_result_schema_is_an_error(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "mystery_2026-12-02.json").write_text(json.dumps({"benchmark": "bench_mystery", "value": 1.0}))
    with pytest.raises(ValueError, match=r"mystery_2026-12-02\.json: no reader"):
        readers.load_records(tmp_path)


def test_a_study_summary_becomes_a_record(tmp_path: Path) -> None:
    folder = tmp_path / "benchmarks" / "results" / "study_mf_2026-12-02"
    folder.mkdir(parents=True)
    base = {"dataset": "digits", "arch": "mlp:2x64", "protocol": "own_convergence", "n": 5,
            "test_accuracy_mean": 0.95}
    summary = {
        "digits/backprop": {**base, "arm": "backprop", "algo": "backprop", "is_baseline": True, "baseline": None},
        "digits/mono_forward": {**base, "arm": "mono_forward", "algo": "mono_forward", "is_baseline": False,
                                "baseline": "digits/backprop", "test_accuracy_mean": 0.9612, "delta_pp": 1.12,
                                "delta_ci95": [0.4, 1.8], "verdict": "DIFFERENT", "train_seconds_ratio": 1.9,
                                "peak_saved_bytes_ratio": 0.69},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    records, _ = readers.load_records(tmp_path)
    text = pages.render("learner:mono_forward", records, [], "docs/learners/mono_forward.md")
    assert "**+1.12 pp** [+0.40, +1.80], DIFFERENT" in text and "0.9612" in text
    assert "localearn study report benchmarks/results/study_mf_2026-12-02" in text


def test_a_precision_benchmark_becomes_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader takes the schema ``benchmarks/bench_precision.py`` writes: its own summary code
    runs here, with the training runs replaced by fixed numbers."""
    spec = importlib.util.spec_from_file_location("bench_precision", REPO / "benchmarks" / "bench_precision.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    speed = {("mono_forward", "fp32"): 1000.0, ("mono_forward", "bf16"): 2500.0,
             ("backprop", "fp32"): 800.0, ("backprop", "bf16"): 1000.0}
    accuracy = {"fp32": 0.95, "bf16": 0.9512}

    def run(algo: str, precision: str, args: Any) -> dict[str, Any]:
        return {"samples_per_second": speed[algo, precision], "train_seconds": 1.0,
                "test_accuracy": accuracy[precision], "steps": 10}

    results = tmp_path / "benchmarks" / "results"
    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(sys, "argv", ["bench_precision.py", "--repeats", "2", "--out", str(results),
                                      "--data-dir", "/somewhere/data"])
    bench.main()
    records, _ = readers.load_records(tmp_path)
    assert [r.topics for r in records] == [("precision", "mono_forward"), ("precision", "backprop")]
    text = pages.render("topic:precision", records, [], "docs/guides/precision.md")
    assert "bf16: throughput **2.5×** of fp32, test accuracy 0.9512 (+0.12 pp)" in text
    assert "fp32 1000 samples/s" in text and "median of 2 runs" in text
    assert "--data-dir DATA" in text and "/somewhere" not in text and str(results) not in text


def test_a_model_run_becomes_a_record_with_its_model_flags(tmp_path: Path) -> None:
    """A run.json of ``localearn train --model ...`` (the any-network records) shows the flags
    that rebuild its model, not its ``model:`` spec, and its learner's page gets the row."""
    folder = tmp_path / "benchmarks" / "results" / "any_network_2026-12-02"
    folder.mkdir(parents=True)
    spec = "model:torchvision:resnet18 blocks=4 balance=flops stem=cifar"
    run = {"status": "complete", "algorithm": "dgl", "dataset": "cifar10_subset", "arch": spec, "schedule": "joint",
           "seed": 0, "data_dir": "/machine/data", "learner_options": {"arch": spec},
           "recipe": {"arch": {"value": spec, "source": "cli"}, "epochs": {"value": 3, "source": "cli"},
                      "lr": {"value": 1e-3, "source": "recipe:localearn default"}},
           "units": [{"unit": "network", "epochs": 3, "best_epoch": 3}],
           "metrics": {"test_accuracy": 0.4151, "val_accuracy": 0.42, "train_seconds": 100.0,
                       "validate_seconds": 5.0, "peak_saved_activation_bytes": 3 * 2**20}}
    (folder / "dgl.json").write_text(json.dumps(run))
    records, _ = readers.load_records(tmp_path)
    text = pages.render("learner:dgl", records, [], "docs/learners/dgl.md")
    assert ("`localearn train --algo dgl --dataset cifar10_subset --data-dir DATA --model torchvision:resnet18 "
            "--blocks 4 --balance flops --model-opt stem=cifar --epochs 3`") in text
    assert "test accuracy **0.4151**" in text and "peak saved for backward 3.00 MiB" in text
    assert "/machine" not in text
    assert "[dgl](docs/learners/dgl.md)" in pages.summary(records, "README.md")


def test_the_readme_statements_name_the_cpu_flags_and_the_command() -> None:
    measures = tool("results_measures")
    precision = measures.statement("precision", REPO)
    flags = json.loads(sorted((REPO / "benchmarks" / "results").glob("precision_*_cpu_*.json"))[-1].read_text())
    assert all(f in precision for f in flags["cpu"]["flags"]) and "bf16" in precision and "--out" not in precision
    pipeline = measures.statement("pipeline", REPO)
    assert "`torchrun --standalone" in pipeline and "--parallel pipeline" in pipeline and "--out" not in pipeline
