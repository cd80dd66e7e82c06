"""The three asymmetries of docs/concepts/protocol.md#asymmetries cannot be configured
(issue #11, "fair by construction").

1. non-uniform stopping rules; 2. a pruner or a budget for one arm only; 3. a TPE sampler seeded
with a global seed. Each is rejected with a one-line error or impossible by the runner's design;
the end-to-end run checks what the runner actually did, including that no tuning trial touched
the test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from localearn.studies.arms import RULE_KEYS
from localearn.studies.protocol import sampler_seed
from localearn.studies.spec import load_spec
from localearn.studies.storage import ensure_study
from localearn.studies.trial import SlotTPESampler, arm_params, sampler_record, train_config
from localearn.studies.worker import optuna_name
from studyutil import write_spec

from localearn.errors import ConfigError
from localearn.runrecord import RunRecord

BASE = {"study": {"name": "fair", "dataset": "digits", "trials": 3}, "arms": [{"algo": "mf", "arch": "mlp:1x32"}]}


def _with_arm_key(key: str, value: Any) -> dict[str, Any]:
    return {"study": BASE["study"], "arms": [{"algo": "mf", key: value}]}


@pytest.mark.parametrize("key", RULE_KEYS)
def test_no_arm_can_have_its_own_budget_rule_pruner_or_sampler(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"arms\[0\]\.{key}: a per-arm budget or rule is not allowed"):
        load_spec(_with_arm_key(key, 5))


@pytest.mark.parametrize("key", ["patience", "epochs", "stop_metric", "pruner", "trials"])
def test_a_rule_cannot_be_tuned_per_arm(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"search_space\.{key}: a per-arm budget or rule is not allowed"):
        load_spec(_with_arm_key("search_space", {key: {"low": 1, "high": 9, "type": "int"}}))


def test_a_learner_space_that_tunes_its_stopping_rule_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from localearn.registry import get_algorithm

    spec = load_spec(BASE)
    arm = spec.arm("digits/mono_forward")
    monkeypatch.setattr(get_algorithm("mono_forward"), "search_space",
                        classmethod(lambda cls, t: {"lr": t.suggest_float("lr", 1e-4, 1e-2), "patience": 2}))
    with pytest.raises(ConfigError, match="tunes patience: a budget or stopping rule cannot differ between arms"):
        arm_params(optuna.trial.FixedTrial({"lr": 1e-3}), arm)


def test_every_arm_trains_under_the_same_stopping_rule() -> None:
    spec = load_spec({"study": {**BASE["study"], "stop_metric": "val_acc", "patience": 4, "epochs": 7},
                      "arms": [{"algo": "mf", "fixed": {"lr": 0.01, "batch_size": 64}}, {"algo": "ff"}]})
    rules = set()
    for arm in spec.arms:
        train, _ = arm_params(optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 1e-5}), arm)
        cfg = train_config(spec, 0, **train)
        rules.add((cfg["epochs"], cfg["patience"], cfg["stop_metric"], cfg["restore_best"]))
    assert rules == {(7, 4, "val_acc", True)}


def test_one_budget_per_arm_and_it_cannot_change(tmp_path: Path) -> None:
    from localearn.studies.storage import open_storage

    storage = open_storage(None, tmp_path)
    study = ensure_study(storage, "s/digits/a", 3, {})
    assert [t.user_attrs["slot"] for t in study.trials] == [0, 1, 2]
    assert ensure_study(storage, "s/digits/a", 3, {}).user_attrs["localearn_slots"] == 3  # loaded, not re-queued
    assert len(study.trials) == 3
    with pytest.raises(ConfigError, match="has 3 trials per arm, the spec 5"):
        ensure_study(storage, "s/digits/a", 5, {})


def test_sampler_is_seeded_per_arm_from_the_study_name_never_globally() -> None:
    with pytest.raises(ConfigError, match=r"study\.seed: unknown key"):
        load_spec({"study": {**BASE["study"], "seed": 42}, "arms": BASE["arms"]})
    spec = load_spec({"study": {"name": "fair", "dataset": "digits"},
                      "arms": [{"algo": "mf"}, {"algo": "ff"}]})
    records = {a.key: sampler_record(optuna_name(spec, a))[1] for a in spec.arms}
    seeds = {r["seed"] for r in records.values()}
    assert len(seeds) == len(spec.arms)  # one seed per arm
    assert all(r["seed"] == sampler_seed(f"fair/{k}") for k, r in records.items())
    assert all(r["class"] == "TPESampler" and r["optuna_version"] == optuna.__version__ and r["args"]
               for r in records.values())


def _first_draw(seed: int, slot: int) -> dict[str, Any]:
    study = optuna.create_study(sampler=SlotTPESampler(seed), direction="maximize")
    study.enqueue_trial({}, user_attrs={"slot": slot})
    trial = study.ask()
    return {"lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True)}


def test_identical_spaces_draw_independently_but_reproducibly() -> None:
    a, b = sampler_seed("fair/digits/backprop"), sampler_seed("fair/digits/mono_forward")
    assert _first_draw(a, 0) != _first_draw(b, 0)  # the revision's collision is impossible
    assert _first_draw(a, 0) == _first_draw(a, 0)  # reproducible
    assert _first_draw(a, 0) != _first_draw(a, 1)  # two workers' startup draws differ


def test_end_to_end_equal_budget_rule_and_no_test_in_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localearn.studies.runner import run_study

    from localearn.trainer import Trainer

    calls: list[tuple[str, bool]] = []
    original = Trainer.evaluate

    def spy(self: Trainer, split: str, stage: Any = None) -> dict[str, float]:
        calls.append((split, self.out_dir is not None))
        return original(self, split, stage)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    spec = write_spec(tmp_path, name="e2e", trials=2, epochs=1, extra='pruner = "median"')
    run_study(spec, out=tmp_path / "out", progress=False, report=False)
    assert ("test", False) not in calls  # tuning trials (no run directory) never evaluate the test split
    assert calls.count(("test", True)) == 4  # once per final run: 2 arms x 2 seeds
    record = json.loads((tmp_path / "out" / "study.json").read_text())
    assert record["status"] == "complete" and record["pruner"]["class"] == "MedianPruner"
    tuning = [a["tuning"] for a in record["arms"].values()]
    assert [t["trials_complete"] + t["trials_pruned"] for t in tuning] == [2, 2]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "runs").rglob("run.json"))]
    assert len({json.dumps(r["stop_rule"], sort_keys=True) for r in runs}) == 1
    assert sorted(r["seed"] for r in runs) == [0, 0, 1, 1]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "out" / "journal.log")))
    for key, arm in record["arms"].items():
        study = optuna.load_study(study_name=arm["optuna_study"], storage=storage)
        assert study.user_attrs["sampler"]["seed"] == sampler_seed(f"e2e/{key}")
        assert study.user_attrs["optuna_version"] == optuna.__version__
        for t in study.trials:
            assert {"seed", "val_accuracy", "data_passes", "status"} <= set(t.user_attrs)
            assert set(t.intermediate_values) == {1}  # whole-model val accuracy at every data pass


def test_matched_passes_gives_each_unit_its_share_of_backprop_epochs() -> None:
    from localearn.studies.final import matched_epochs

    spec = load_spec({"study": {"name": "b", "dataset": "digits", "protocol": "matched_passes"},
                      "arms": [{"algo": "mf", "arch": "mlp:2x32"}, {"algo": "ff", "arch": "mlp:2x32"}]})
    bp_runs = [RunRecord(status="complete", epochs=e) for e in (4, 5)] + [RunRecord(status="diverged")]
    config: dict[str, Any] = {"train": {}, "learner_options": {}}
    assert matched_epochs(spec, spec.arm("digits/mono_forward"), config, bp_runs) == 3  # greedy: S = 2
    assert matched_epochs(spec, spec.arm("digits/forward_forward"), config, bp_runs) == 5  # joint: S = 1
