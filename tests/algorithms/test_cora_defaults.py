"""Cora's public split with no options but the algorithm and the dataset: the reference recipes
(``localearn recipes``) must reach the papers' ballpark (issue 14: SF >= 0.77, GCN BP >= 0.80)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import localearn


@pytest.fixture()
def cora_dir(shared_data: Path, tmp_path: Path) -> Path:
    """A private copy of the Planetoid Cora raw files (Planetoid writes next to them)."""
    shutil.copytree(shared_data / "planetoid" / "Cora" / "raw", tmp_path / "planetoid" / "Cora" / "raw")
    return tmp_path


def test_backprop_gnn_defaults_on_cora_reach_the_pyg_example(cora_dir: Path) -> None:
    """PyG's GCN example recipe (hidden 16, dropout 0.5, lr 0.01, wd 5e-4, 200 epochs), seed 0."""
    run = localearn.fit("backprop_gnn", "cora", data_dir=cora_dir, seed=0, progress=False, device="cpu")
    assert run["metrics"]["test_accuracy"] >= 0.80, run["metrics"]["test_accuracy"]
    assert run["arch"] == "gcn:16x2" and run["config"]["epochs"] == 200
    assert run["recipe"]["dropout"] == {"value": 0.5, "source": "recipe:PyG examples/gcn.py (Planetoid)"}


@pytest.mark.slow  # the paper's budget: up to 1000 epochs per layer (minutes on a 2-core CPU)
def test_forward_gnn_defaults_on_cora_reach_the_paper(cora_dir: Path) -> None:
    run = localearn.fit("forward_gnn", "cora", data_dir=cora_dir, seed=0, progress=False, device="cpu")
    assert run["metrics"]["test_accuracy"] >= 0.77, run["metrics"]["test_accuracy"]
    assert run["config"]["epochs"] == 1000 and run["config"]["patience"] == 200


def test_forward_gnn_defaults_resolve_to_the_paper_budget() -> None:
    """The fast check of what the slow run uses: the ForwardGNN protocol's budget, not 20 epochs."""
    from localearn.recipes import resolve_recipe

    rec = resolve_recipe("forward_gnn", "cora")
    assert {k: rec[k]["value"] for k in ("epochs", "patience", "lr", "weight_decay", "arch")} == {
        "epochs": 1000, "patience": 200, "lr": 1e-3, "weight_decay": 5e-4, "arch": "gcn:128x2"}
    assert rec["epochs"]["source"].startswith("recipe:docs/learners/forward_gnn.md#reference")
