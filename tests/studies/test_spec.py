"""Study specs: every mistake is one line naming the file and the key, before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
from localearn.studies.spec import StudySpec, load_spec

from localearn.cli import main
from localearn.errors import ConfigError

ISSUE_SPEC = """
[study]
name = "mf-vs-bp-digits"
dataset = "digits"
trials = 6            # per arm, identical for every arm
epochs = 10           # per-unit cap, tuning and final runs
seeds = [0, 1, 2, 3, 4]
protocol = "own_convergence"

[[arms]]
algo = "backprop"
arch = "mlp:2x256"

[[arms]]
algo = "mono_forward"
arch = "mlp:2x256"
options = { prediction = "sum" }
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_the_issue_example_resolves(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, ISSUE_SPEC))
    assert [a.key for a in spec.arms] == ["digits/backprop", "digits/mono_forward"]
    mf = spec.arm("digits/mono_forward")
    assert mf.baseline == "digits/backprop" and mf.arch == "mlp:2x256" and mf.options == {"prediction": "sum"}
    assert (spec.trials, spec.epochs, spec.seeds, spec.pruner, spec.patience) == (6, 10, [0, 1, 2, 3, 4], "none", 20)


def test_backprop_arm_is_added_per_arch_and_paired(tmp_path: Path) -> None:
    spec = load_spec({"study": {"name": "x", "datasets": ["digits"]},
                      "arms": [{"algo": "mf", "arch": "mlp:2x64"}, {"algo": "ff", "arch": "mlp:3x64", "name": "ff3"}]})
    bps = {a.name: a for a in spec.arms if a.is_baseline}
    assert set(bps) == {"backprop@mlp:2x64", "backprop@mlp:3x64"}
    assert {a.name: a.baseline for a in spec.arms if not a.is_baseline} == {
        "mono_forward": "digits/backprop@mlp:2x64", "ff3": "digits/backprop@mlp:3x64"}
    assert all(b.algo == "backprop" and b.arch == b.name.split("@")[1] for b in bps.values())


def test_graph_dataset_gets_the_gnn_baseline() -> None:
    spec = load_spec({"study": {"name": "g", "dataset": "karate"}, "arms": [{"algo": "forward_gnn"}]})
    base = next(a for a in spec.arms if a.is_baseline)
    assert base.algo == "backprop_gnn" and base.arch == spec.arm("karate/forward_gnn").arch


@pytest.mark.parametrize(("text", "key", "words"), [
    ('[study]\nname="a"\ndataset="digits"\ntrails=3\n[[arms]]\nalgo="mf"', "study.trails", "unknown key"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="nope"', "arms[0].algo", "nope"),
    ('[study]\nname="a"\ndataset="digits"\ntrials="6"\n[[arms]]\nalgo="mf"', "study.trials", "expected int"),
    ('[study]\nname="a"\ndataset="digits"\ntrials=0\n[[arms]]\nalgo="mf"', "study.trials", ">= 1"),
    ('[study]\nname="a"\ndataset="nosuch"\n[[arms]]\nalgo="mf"', "study.dataset", "nosuch"),
    ('[study]\nname="a"\ndataset="digits"\nseeds=[1]\n[[arms]]\nalgo="mf"', "study.seeds", ">= 2"),
    ('[study]\nname="a"\ndataset="digits"\nprotocol="fast"\n[[arms]]\nalgo="mf"', "study.protocol", "own_convergence"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\noptions={wat=1}', "arms[0].options", "wat"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\noptions={input_head="yes"}', "arms[0].options",
     "bool"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\narch="mlp:x"', "arms[0].arch", "mlp:x"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nschedule="async"', "arms[0].schedule", "greedy"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nsearch_space={lr={low=1e-2,high=1e-4}}',
     "arms[0].search_space.lr", "below high"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nsearch_space={lr={low=0,high=1,log=true}}',
     "arms[0].search_space.lr", "low > 0"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nsearch_space={depth={low=1,high=3}}',
     "arms[0].search_space.depth", "no option"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nfixed={optimizer="lion"}', "arms[0].fixed.optimizer",
     "adam"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\n[[arms]]\nalgo="ff"\nname="mono_forward"',
     "arms.name", "unique"),
    ('[study]\nname="a"\ndataset="karate"\n[[arms]]\nalgo="mf"', "arms[0].algo", "image"),
    ('[study]\nname="a"\ndataset="digits"\n[[arms]]\nalgo="mf"\nname="a/b"', "arms[0].name", "without '/'"),
    ('[study]\nname="a"\ndataset="digits"\n[extra]\nx=1\n[[arms]]\nalgo="mf"', "extra", "unknown table"),
    ('[study]\nname="a"\ndataset="digits"', "arms", "required"),
    ('[study]\nname="a"\ndataset="digits"\nx = [', "", "not valid TOML"),
])
def test_bad_specs_fail_with_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and f": {key}" in msg and words in msg, msg


def test_cli_exits_2_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _spec(tmp_path, ISSUE_SPEC.replace("trials = 6", "trials = -1"))
    assert main(["study", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "study.trials" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing was started


def test_data_dir_resolves_against_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    spec = load_spec(_spec(tmp_path, ISSUE_SPEC.replace('protocol = "own_convergence"',
                                                        'protocol = "own_convergence"\ndata_dir = "data"')))
    assert spec.data_dir == str(tmp_path / "data")


def _load(study: dict[str, object], arms: list[dict[str, object]]) -> StudySpec:
    return load_spec({"study": {"name": "s", "dataset": "digits", **study}, "arms": arms})


def test_a_grid_arm_has_exactly_the_budget_and_a_fixed_study_runs_one_trial() -> None:
    grid = {"algo": "mf", "grid": {"lr": [0.01, 0.03], "prediction": ["sum", "last"]}}
    spec = _load({}, [grid, {"algo": "bp", "grid": {"lr": [1e-3, 1e-2], "weight_decay": [0.0, 1e-4]}}])
    assert spec.trials == 4 and [a.search for a in spec.arms] == ["grid", "grid"]
    assert spec.arm("digits/mono_forward").points()[1] == {"lr": 0.01, "prediction": "last"}
    fixed = _load({}, [{"algo": "mf", "search": "fixed", "fixed": {"lr": 0.01}}])
    assert fixed.trials == 1 and [(a.name, a.search) for a in fixed.arms] == [("backprop", "fixed"),
                                                                             ("mono_forward", "fixed")]
    assert _load({"trials": 3}, [{"algo": "mf"}]).arm("digits/backprop").search == "tpe"  # the added twin


@pytest.mark.parametrize(("study", "arm", "key", "words"), [
    ({"trials": 3}, {"algo": "mf", "grid": {"lr": [0.01, 0.03]}}, "arms[0].grid", "2 points, but every arm gets"),
    ({"trials": 2}, {"algo": "mf", "search": "fixed"}, "arms[0].search", "a fixed arm runs one trial"),
    ({}, {"algo": "mf", "search": "grid"}, "arms[0].grid", "needs a grid table"),
    ({}, {"algo": "mf", "search": "fixed", "search_space": {"lr": {"low": 1e-4, "high": 1e-1}}},
     "arms[0].search_space", "searches nothing"),
    ({}, {"algo": "mf", "search": "annealing"}, "arms[0].search", "tpe, grid, fixed"),
    ({}, {"algo": "mf", "grid": {"lr": [0.01, 0.01]}}, "arms[0].grid.lr", "distinct"),
    ({}, {"algo": "mf", "grid": {"lr": [-1.0]}}, "arms[0].grid.lr", "non-negative"),
    ({}, {"algo": "mf", "grid": {"wat": [1]}}, "arms[0].grid.wat", "no option"),
    ({}, {"algo": "mf", "grid": {"lr_schedule": ["cosine", "sometimes"]}}, "arms[0].grid.lr_schedule", "sometimes"),
    ({}, {"algo": "mf", "precision": "bf16"}, "arms[0].precision", "the same for every arm; set study.precision"),
    ({}, {"algo": "mf", "fixed": {"precision": "bf16"}}, "arms[0].fixed.precision", "study.precision"),
    ({}, {"algo": "ccl", "grid": {"task": ["autoencoder"]}}, "arms[0].grid.task", "study.task"),
    ({}, {"algo": "ccl", "options": {"task": "autoencoder"}}, "arms[0].options.task", "study.task"),
    ({"precision": "fp8"}, {"algo": "mf"}, "study.precision", "fp32, bf16, fp16"),
    ({"task": "segmentation"}, {"algo": "mf"}, "study.task", "classification, link, autoencoder"),
    ({"task": "autoencoder", "margin": 0.01}, {"algo": "mf"}, "study.task", "mono_forward trains only"),
    ({"task": "autoencoder"}, {"algo": "ccl"}, "study.margin", "required for task autoencoder"),
    ({"margin": -1}, {"algo": "mf"}, "study.margin", "positive"),
])
def test_bad_search_objective_and_precision_keys_are_one_line(study: dict[str, object], arm: dict[str, object],
                                                              key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(study, [arm])
    msg = str(err.value)
    assert "\n" not in msg and f": {key}: " in msg and words in msg, msg


def test_the_task_sets_every_arms_objective_and_the_precision_is_the_studys() -> None:
    spec = _load({"task": "autoencoder", "margin": 0.005, "precision": "bf16"}, [{"algo": "ccl"}])
    assert (spec.metric, spec.direction, spec.precision, spec.margin) == ("mse", "minimize", "bf16", 0.005)
    assert [a.algo for a in spec.arms] == ["backprop", "counter_current"]
    link = load_spec({"study": {"name": "l", "dataset": "karate", "task": "link"}, "arms": [{"algo": "forward_gnn"}]})
    assert (link.metric, link.direction, link.margin) == ("roc_auc", "maximize", 0.25)
    assert _load({}, [{"algo": "mf"}]).precision == "fp32"
