"""Pipeline and data parallelism composed: ``--parallel pipeline --replicas 2`` on 4 gloo ranks.

Two copies of a 2-rank layer pipeline each take half of every batch's rows; the copies of each
layer group average their gradients before each layer's step (as ``--parallel ddp`` does), so
the result equals one process with the whole batch, up to float summation order, and the copies
stay identical (issue #13: "Pipeline and DDP compose").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from distutil import max_gap, model, run_json, single, torchrun

from localearn.config import TrainConfig
from localearn.errors import ConfigError

ARGS = ("--algo", "mono_forward", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
        "--schedule", "joint", "--arch", "mlp:4x64")


def test_two_replicas_of_a_two_rank_pipeline_match_one_process(tmp_path: Path) -> None:
    one = single(tmp_path / "one", *ARGS)
    assert one.returncode == 0, one.stderr
    four = torchrun(tmp_path / "four", *ARGS, "--parallel", "pipeline", "--replicas", "2", nproc=4)
    assert four.returncode == 0, four.stdout + four.stderr
    ranks = [model(tmp_path / "four" / f"rank{r}") for r in range(4)]
    assert max_gap(ranks[0], ranks[2]) == 0.0 and max_gap(ranks[1], ranks[3]) == 0.0  # identical copies
    assert max_gap(model(tmp_path / "one"), model(tmp_path / "four")) < 1e-4  # float summation order only
    a, b = run_json(tmp_path / "one"), run_json(tmp_path / "four")
    assert abs(a["metrics"]["test_accuracy"] - b["metrics"]["test_accuracy"]) <= 1 / 360  # at most 1 test image
    info = b["distributed"]["ranks"]
    assert [(r["replica"], r["positions"]) for r in info] == [(0, [0, 1]), (0, [2, 3]), (1, [0, 1]), (1, [2, 3])]
    assert [r["batch_share"] for r in info] == [0.5] * 4
    assert all(r["bytes_sent"] > 0 for r in info)  # activations forward, gradients to the other copy


def test_replicas_need_the_pipeline_and_must_divide_the_ranks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use it with parallel pipeline"):
        TrainConfig(parallel="ddp", replicas=2).validate()
    res = torchrun(tmp_path / "x", *ARGS, "--parallel", "pipeline", "--replicas", "2", nproc=3)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error:")]
    assert res.returncode != 0 and lines and "--replicas 2 must divide the 3 ranks" in lines[0], lines
