"""The one run resolver (``localearn.runspec``) and the typed run record (``localearn.runrecord``).

``fit`` runs exactly the :class:`RunSpec` that :func:`resolve_run` builds from the same values (a
study's trials and final runs resolve through the same function: tests/studies/test_objective.py);
a :class:`RunRecord` reads a current ``run.json`` of every task and an older one (no ``update``
block, history rows named ``val_accuracy``) alike.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import localearn
from localearn.errors import ConfigError, LocalearnError
from localearn.runrecord import RunRecord, read_record
from localearn.runspec import SETTINGS, resolve_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fit_trains_the_run_the_resolver_builds(tmp_path: Path) -> None:
    values = {"arch": "mlp:1x16", "learner_options": {"prediction": "sum"}, "epochs": 1, "lr": 0.003}
    spec = resolve_run("mf", "digits", settings={"arch": values["arch"]}, learner_options={"prediction": "sum"},
                       epochs=1, lr=0.003, progress=False)
    run = localearn.fit("mf", "digits", progress=False, out=tmp_path, **values)  # type: ignore[arg-type]
    config = {k: v for k, v in run["config"].items() if k not in ("optimizer_resolved", "stop_metric_resolved")}
    assert config == dataclasses.asdict(spec.train)
    assert run["recipe"] == spec.recipe and run["learner_options"] == spec.learner_options
    assert spec.recipe is not None and spec.recipe["lr"] == {"value": 0.003, "source": "argument"}
    assert spec.recipe["batch_size"]["source"].startswith("recipe:")  # unset: the reference recipe's
    record = read_record(tmp_path)
    assert (record.algorithm, record.arch, record.task, record.precision) == ("mono_forward", "mlp:1x16",
                                                                             "classification", "fp32")
    assert record.test == run["metrics"]["test_accuracy"] and len(record.history) == 1


def test_the_source_of_a_value_is_who_gave_it() -> None:
    spec = resolve_run("ccl", "digits", settings={"task": "autoencoder"}, given_by="study", batch_size=32)
    assert spec.task == "autoencoder" and spec.train.batch_size == 32
    assert spec.recipe is not None and spec.recipe["batch_size"]["source"] == "study"


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"settings": {"depth": 3}}, "unknown run setting 'depth'"),
    ({"settings": {"arch": 3}}, "arch must be a str"),
    ({"settings": {"schedule": "async"}}, "not 'async'"),
    ({"settings": {"task": "link"}}, "mono_forward trains only the classification task"),
    ({"epochz": 3}, "unknown training option(s) epochz"),
    ({"learner_options": {"wat": 1}}, "no option 'wat'"),
])
def test_bad_values_are_one_line_before_any_data(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_run("mf", "digits", **kwargs)  # type: ignore[arg-type]
    assert words in str(err.value) and "\n" not in str(err.value)
    assert set(SETTINGS) == {"arch", "schedule", "task"}


def test_a_record_reads_an_autoencoder_run_and_an_older_classification_run(tmp_path: Path) -> None:
    result = localearn.fit("ccl", "digits", task="autoencoder", arch="mlp:64-16-64", epochs=1, progress=False,
                           out=tmp_path)
    ae = read_record(tmp_path)
    assert (ae.task, ae.metric, ae.test) == ("autoencoder", "mse", result["metrics"]["test_mse"])
    assert ae.history[0].val_metric == result["history"][0]["val_mse"] and ae.failure() == ""
    old = RunRecord.load(ROOT / "benchmarks/results/defaults_mnist_2026-12-01/backprop.json")
    raw = json.loads((ROOT / "benchmarks/results/defaults_mnist_2026-12-01/backprop.json").read_text())
    assert old is not None and "update" not in raw and old.precision == "fp32" and old.metric == "accuracy"
    assert old.test == raw["metrics"]["test_accuracy"]
    assert old.history[0].val_metric == raw["history"][0]["val_accuracy"]
    assert old.energy.method == "not_measured" and old.energy.train_joules is None


def test_missing_unreadable_and_diverged_records(tmp_path: Path) -> None:
    assert RunRecord.load(tmp_path / "none") is None
    (tmp_path / "run.json").write_text("{not json")
    assert RunRecord.load(tmp_path) == RunRecord(status="unreadable run.json")
    with pytest.raises(LocalearnError, match=r"no readable run\.json"):
        read_record(tmp_path)
    diverged = RunRecord.from_dict({"status": "diverged", "diverged": {"unit": "layer0", "epoch": 2,
                                                                        "reason": "loss is nan"}})
    assert diverged.failure() == "unit layer0, epoch 2: loss is nan" and not diverged.complete
    link = RunRecord.from_dict({"status": "complete", "task": "link"})
    assert link.failure() == "complete but no test roc_auc recorded"
