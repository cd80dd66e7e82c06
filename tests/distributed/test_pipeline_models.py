"""The layer pipeline over a model's blocks (issue #19, item 5) on 2 gloo ranks equals one process.

Every learner that trains over a model's blocks and can be pipelined (DGL, InfoPro with its image
target travelling with the activations, AugLocal with its auxiliary copies, Mono-Forward greedy, and
CaFo-Rand with the model's own head as its last predictor) runs a torchvision ShuffleNet V2 cut into
3 blocks: the parameters after training match one process, and so do the stopping decisions and the
test accuracy; ``localearn eval`` joins the ranks' checkpoints and rebuilds the model from its name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from distutil import max_gap, model, run_json, single, torchrun

MODEL = ("--model", "torchvision:shufflenet_v2_x0_5", "--blocks", "3", "--dataset", "digits", "--epochs", "2",
         "--batch-size", "64", "--optimizer", "adam", "--lr", "2e-3")


@pytest.mark.parametrize(("algo", "args"), [
    ("dgl", ()),  # joint: every block steps on every batch
    pytest.param("infopro", (), marks=pytest.mark.slow),
    pytest.param("auglocal", ("--opt", "aug_depth=2"), marks=pytest.mark.slow),
    pytest.param("mono_forward", (), marks=pytest.mark.slow),  # greedy: each unit through the pipe
    pytest.param("cafo", (), marks=pytest.mark.slow),  # block k with predictor k; the model's head last
])
def test_pipeline_over_model_blocks_matches_one_process(tmp_path: Path, algo: str, args: tuple[str, ...]) -> None:
    one = single(tmp_path / "one", "--algo", algo, *MODEL, *args)
    assert one.returncode == 0, one.stderr
    two = torchrun(tmp_path / "two", "--algo", algo, *MODEL, *args, "--parallel", "pipeline")
    assert two.returncode == 0, two.stdout + two.stderr
    assert max_gap(model(tmp_path / "one"), model(tmp_path / "two")) < 1e-5
    a, b = run_json(tmp_path / "one"), run_json(tmp_path / "two")
    assert a["metrics"]["test_accuracy"] == pytest.approx(b["metrics"]["test_accuracy"], abs=1e-9)
    assert [u["best_epoch"] for u in a["units"]] == [u["best_epoch"] for u in b["units"]]
    assert len({h["val_loss"] for h in b["history"]}) > 1  # it trained
    r0, r1 = b["distributed"]["ranks"]
    assert r0["bytes_sent"] > 0 and r0["positions"][1] + 1 == r1["positions"][0]
    ev = subprocess.run([sys.executable, "-m", "localearn", "eval", str(tmp_path / "two"), "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(b["metrics"]["test_accuracy"], abs=1e-9)
