"""Every study spec shipped in ``studies/`` (installed as ``localearn.studies`` data).

Checked with plain tomllib against the spec keys of the study contract: only known keys, no
per-arm budget or rule keys (docs/concepts/protocol.md#asymmetries), registered learners on data of their kind,
options the learner accepts, parseable architectures, TrainConfig fields in ``fixed``; then
through the loader, which must accept it as it is (budgets equal across search, grid and fixed arms).
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from localearn.studies.spec import load_spec

from localearn.arch import parse_arch
from localearn.data import canonical_dataset, dataset_kind
from localearn.models.localize import arm_arch
from localearn.registry import canonical_name, get_algorithm
from localearn.run import check_options
from localearn.trainer import TrainConfig

STUDY_KEYS = {"name", "dataset", "datasets", "data_dir", "dataset_options", "trials", "epochs", "patience", "seeds",
              "protocol", "stop_metric", "pruner", "batch_size", "device", "restore_best", "energy", "country",
              "idle_seconds", "task", "precision", "margin"}
ARM_KEYS = {"algo", "name", "arch", "schedule", "options", "fixed", "search", "search_space", "grid", "model", "blocks",
            "balance", "model_options"}
FIXED_KEYS = {"optimizer", "lr", "weight_decay", "batch_size", "momentum", "grad_clip", "lr_schedule"}
SPECS = sorted(Path(str(files("localearn.studies"))).glob("*.toml"))
# (input shape, classes) per dataset, so that every arm and its backprop twin can be built without data
SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10),
          "cifar10": ((3, 32, 32), 10), "cifar10_subset": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
          "cora": ((1433,), 7)}
SHIPPED = {"mf_vs_bp_digits.toml", "local_learners_mnist.toml", "forward_gnn_planetoid.toml", "beyond_backprop.toml",
           "ccl_autoencoder_mnist.toml", "forward_gnn_cora_links.toml", "forward_gnn_cora_depth.toml",
           "ff_collab_mnist.toml", "ccl_mnist.toml", "any_network_cifar10.toml", "any_network_cifar_subset.toml"}


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def test_the_promised_specs_are_installed() -> None:
    assert SHIPPED <= {p.name for p in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_uses_contract_keys_and_registered_learners(path: Path) -> None:
    spec = _load(path)
    assert set(spec) == {"study", "arms"}, path.name
    study, arms = spec["study"], spec["arms"]
    assert set(study) <= STUDY_KEYS, f"{path.name}: unknown study keys {set(study) - STUDY_KEYS}"
    assert isinstance(study["name"], str) and study["name"]
    datasets = study.get("datasets") or [study["dataset"]]
    kinds = {dataset_kind(canonical_dataset(d)) for d in datasets}
    assert len(kinds) == 1, f"{path.name}: mixes image and graph datasets"
    assert study.get("protocol", "own_convergence") in ("own_convergence", "matched_passes")
    assert study.get("pruner", "none") in ("none", "median", "hyperband")
    assert study.get("stop_metric", "auto") in ("auto", "val_loss", "val_acc")
    seeds = study.get("seeds", [0, 1, 2, 3, 4])
    assert len(seeds) >= 2 and len(set(seeds)) == len(seeds)
    for key in ("trials", "epochs", "patience"):
        assert int(study.get(key, 1)) >= 1
    names = []
    for arm in arms:
        assert set(arm) <= ARM_KEYS, f"{path.name}: unknown or per-arm budget keys {set(arm) - ARM_KEYS}"
        cls = get_algorithm(arm["algo"])
        assert cls.supports_graphs == (kinds == {"graph"}), f"{path.name}: {arm['algo']} on {datasets}"
        arch = arm_arch(arm["algo"], arm)  # a model's fields become a model: spec
        if arch is not None:
            parse_arch(arch)
        check_options(arm["algo"], dict(arm.get("options", {})))
        task = {"task": study["task"]} if "task" in study else {}
        for ds in datasets:  # the arm and its same-trunk backprop twin build on this data
            shape, classes = SHAPES[canonical_dataset(ds)]
            cls(arch=arch, input_shape=shape, num_classes=classes, **arm.get("options", {}), **task)
            get_algorithm("backprop_gnn" if cls.supports_graphs else "backprop")(
                arch=arch, input_shape=shape, num_classes=classes, **task)
        fixed = arm.get("fixed", {})
        assert set(fixed) <= FIXED_KEYS
        TrainConfig(**fixed).validate()
        names.append(arm.get("name", canonical_name(arm["algo"])))
    assert len(names) == len(set(names)), f"{path.name}: arm names must be unique"
    loaded = load_spec(path)
    assert all(len(a.points()) == loaded.trials for a in loaded.arms if a.search != "tpe")


def test_the_readme_example_is_exactly_the_issue_spec() -> None:
    spec = _load(next(p for p in SPECS if p.name == "mf_vs_bp_digits.toml"))
    assert spec["study"] == {"name": "mf-vs-bp-digits", "dataset": "digits", "trials": 6, "epochs": 10,
                             "seeds": [0, 1, 2, 3, 4], "protocol": "own_convergence"}
    assert spec["arms"] == [{"algo": "backprop", "arch": "mlp:2x256"},
                            {"algo": "mono_forward", "arch": "mlp:2x256", "options": {"prediction": "sum"}}]
