from __future__ import annotations

import optuna
import pytest

import localearn
from localearn.callbacks import OptunaPruning


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0))
    for _ in range(2):  # two finished trials that were excellent at every data pass
        study.add_trial(optuna.trial.create_trial(value=0.99, intermediate_values={s: 0.99 for s in range(1, 5)}))
    return study


def test_a_weak_trial_is_pruned_on_whole_model_accuracy() -> None:
    trial = _study().ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at data pass 1"):
        localearn.fit("mf", "digits", arch="mlp:1x16", epochs=4, lr=1e-5, progress=False,
                      callbacks=[OptunaPruning(trial)])
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1]


def test_a_good_trial_reports_every_pass() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    r = localearn.fit("mf", "digits", arch="mlp:2x64", epochs=2, progress=False, callbacks=[OptunaPruning(trial)])
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2, 3, 4]
    assert all("model_val_accuracy" in h for h in r["history"])
