"""Reference recipes as defaults (with their sources in run.json) and weights-only checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import localearn
from localearn.checkpoint import load_checkpoint
from localearn.errors import LocalearnError
from localearn.recipes import apply_recipe, check_recipes, resolve_recipe
from localearn.registry import get_algorithm, list_algorithms

CLI = [sys.executable, "-m", "localearn.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------------ recipes
def test_every_declared_recipe_sets_only_known_options_and_cites_a_source() -> None:
    for algo in list_algorithms():
        check_recipes(algo)  # raises on a key that is neither a training nor a learner option
        for rec in get_algorithm(algo).recipes.values():
            assert all(rec.source_of(k).strip() for k in rec.values), algo


def test_resolution_order_dataset_beats_family_beats_base() -> None:
    mnist = resolve_recipe("backprop", "mnist")
    assert mnist["lr"] == {"value": 1.976e-4,
                           "source": "recipe:docs/reference/setups.md#hyperparameters (BP, MLP MNIST 2x1000, original)"}
    assert mnist["optimizer"]["value"] == "adamw" and mnist["epochs"]["value"] == 100
    assert resolve_recipe("backprop", "digits")["epochs"]["value"] == 20  # the quick-start override
    ff = resolve_recipe("forward_forward", "mnist")
    assert (ff["batch_size"]["value"], ff["optimizer"]["value"], ff["lr"]["value"]) == (100, "sgd", 1e-3)
    cora = resolve_recipe("backprop_gnn", "cora")
    assert (cora["arch"]["value"], cora["dropout"]["value"], cora["lr"]["value"]) == ("gcn:16x2", 0.5, 0.01)
    assert cora["epochs"]["source"].startswith("recipe:PyG examples/gcn.py")


def test_explicit_values_win_and_every_value_records_its_source() -> None:
    train, opts, arch, record = apply_recipe(
        "backprop_gnn", "cora", {"epochs": 7, "lr": None, "seed": 3}, {"dropout": 0.1}, "gcn:32x2",
        {"momentum": 0.9}, given_by="cli")
    assert train["epochs"] == 7 and train["lr"] == 0.01 and train["seed"] == 3
    assert opts["dropout"] == 0.1 and arch == "gcn:32x2"
    assert record["epochs"] == {"value": 7, "source": "cli"}
    assert record["dropout"] == {"value": 0.1, "source": "cli"}
    assert record["arch"] == {"value": "gcn:32x2", "source": "cli"}
    assert record["lr"]["source"].startswith("recipe:PyG")
    assert record["momentum"] == {"value": 0.9, "source": "default"}


def test_fit_uses_the_recipe_and_run_json_records_it(tmp_path: Path) -> None:
    run = localearn.fit("backprop", "digits", arch="mlp:1x32", patience=3, out=tmp_path / "r", progress=False)
    stored = json.loads((tmp_path / "r" / "run.json").read_text())["recipe"]
    assert stored == run["recipe"]
    assert stored["patience"] == {"value": 3, "source": "argument"}
    assert stored["epochs"]["value"] == run["config"]["epochs"] == 20
    assert stored["epochs"]["source"].startswith("recipe:localearn quick start")
    assert stored["optimizer"]["value"] == run["config"]["optimizer_resolved"]["name"] == "adamw"


def test_recipes_command_prints_values_and_sources() -> None:
    res = run_cli("recipes", "--algo", "bp_gnn", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["key"]: r for r in json.loads(res.stdout)}
    assert rows["cora"]["values"]["lr"] == 0.01
    assert rows["cora"]["sources"]["dropout"] == "PyG examples/gcn.py (Planetoid)"
    text = run_cli("recipes", "--algo", "ff").stdout
    assert "forward_forward [images]" in text and "loeweX" in text
    assert run_cli("recipes", "--algo", "nope").returncode == 2


# ------------------------------------------------------------------------------ safe loading
class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _crafted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A real run directory whose checkpoint.pt was replaced by a crafted pickle."""
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    localearn.fit("mf", "digits", arch="mlp:1x16", epochs=1, out=out, progress=False)
    ckpt = load_checkpoint(out)  # a genuine checkpoint loads under weights_only=True
    ckpt["run"]["evil"] = _Evil(marker)
    torch.save(ckpt, out / "checkpoint.pt")
    return out, marker


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, command: str) -> None:
    out, marker = _crafted_run(tmp_path)
    (out / "run.json").unlink()
    args = ["eval", str(out)] if command == "eval" else ["train", "--out", str(out), "--resume", "--no-progress"]
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert not marker.exists(), "unpickling ran the crafted command"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "refusing to load" in lines[0] and "posix.system" in lines[0] and "nothing in it was run" in lines[0]


def test_python_api_refuses_too(tmp_path: Path) -> None:
    out, marker = _crafted_run(tmp_path)
    with pytest.raises(LocalearnError, match=r"refusing to load .*posix\.system"):
        localearn.fit(out=out, resume=True, algo=None, dataset=None, progress=False)
    assert not marker.exists()
