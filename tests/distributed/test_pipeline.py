"""The layer pipeline on 2 gloo ranks equals one process (issue #13).

A layer's output on batch t is computed before its own step on t, so the pipelined joint schedule
computes what the single-process joint schedule computes: the parameters after training must
match (float tolerance: the ranks run one thread each), and so must the stopping decisions and
test accuracy. The greedy schedule streams the frozen prefix through the pipeline. Every learner
that declares a pipeline is checked: Mono-Forward, FF, CaFo-Rand (block and predictor together),
NoProp-DT (per-step noise streams, so a rank draws what one process draws) and ForwardGNN (the
graph travels with the states).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from distutil import max_gap, model, run_json, single, torchrun

IMAGES = ("--dataset", "digits", "--epochs", "2", "--batch-size", "64")
NOPROP = ("--arch", "cnn:8-16", "--opt", "T=3", "--opt", "width=32", "--opt", "hidden=16", "--opt", "inference=mean")
GRAPH = ("--dataset", "karate", "--arch", "gcn:16x2", "--epochs", "6")


@pytest.mark.parametrize(("algo", "args"), [
    ("mono_forward", (*IMAGES, "--schedule", "joint", "--arch", "mlp:4x64")),
    ("mono_forward", (*IMAGES, "--arch", "mlp:3x64", "--split", "1,2")),  # greedy: each unit through the pipe
    ("forward_forward", (*IMAGES, "--arch", "mlp:3x64", "--schedule", "joint")),
    ("cafo", (*IMAGES, "--arch", "cnn:4-8")),  # block k with predictor k; frozen blocks stream
    ("noprop", (*IMAGES, *NOPROP, "--epochs", "3", "--lr", "3e-3")),  # joint, one block per step
    ("noprop", (*IMAGES, *NOPROP, "--schedule", "greedy")),
    ("forward_gnn", GRAPH),  # SF, greedy: the graph travels with the states
    ("forward_gnn", (*GRAPH, "--schedule", "joint", "--opt", "variant=ff_la")),
    ("forward_gnn", (*GRAPH, "--schedule", "joint", "--opt", "variant=ff_vn")),
])
def test_pipeline_matches_one_process(tmp_path: Path, algo: str, args: tuple[str, ...]) -> None:
    one = single(tmp_path / "one", "--algo", algo, *args)
    assert one.returncode == 0, one.stderr
    two = torchrun(tmp_path / "two", "--algo", algo, *args, "--parallel", "pipeline")
    assert two.returncode == 0, two.stdout + two.stderr
    assert max_gap(model(tmp_path / "one"), model(tmp_path / "two")) < 1e-5
    a, b = run_json(tmp_path / "one"), run_json(tmp_path / "two")
    assert a["metrics"]["test_accuracy"] == pytest.approx(b["metrics"]["test_accuracy"], abs=1e-9)
    assert [u["best_epoch"] for u in a["units"]] == [u["best_epoch"] for u in b["units"]]
    assert len({h["val_loss"] for h in b["history"]}) > 1  # it trained: equal, but not by standing still
    dist = b["distributed"]
    assert dist["mode"] == "pipeline" and dist["world_size"] == 2
    r0, r1 = dist["ranks"]
    assert r0["bytes_sent"] > 0 and r1["bytes_sent"] == 0  # activations only flow forward
    assert r0["positions"][1] + 1 == r1["positions"][0]  # contiguous groups
    assert all(r["wait_seconds"] >= 0 and r["train_seconds"] > 0 for r in (r0, r1))
    # Each rank holds only its own layers; `localearn eval DIR` joins them.
    ranks = [{k for k in model(tmp_path / "two" / f"rank{r}") if k.startswith("layers.")} for r in (0, 1)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    ev = subprocess.run([sys.executable, "-m", "localearn", "eval", str(tmp_path / "two"), "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(b["metrics"]["test_accuracy"], abs=1e-9)


def test_learners_that_need_later_layers_refuse_with_the_reason(tmp_path: Path) -> None:
    for algo, opts, why in (("counter_current", (), "feedback network"),
                            ("forward_forward", ("--opt", "collab=all"), "summed over all layers"),
                            ("cafo", ("--opt", "blocks=dfa"), "error at the output"),
                            ("noprop", ("--opt", "embedding=learned"), "which the head learns"),
                            ("forward_gnn", ("--dataset", "karate", "--opt", "variant=top2loss"), "layer above"),
                            ("backprop", (), "gradient crosses every layer")):
        res = torchrun(tmp_path / algo, "--algo", algo, *opts, "--epochs", "1", "--parallel", "pipeline", nproc=1)
        assert res.returncode != 0
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error:")]
        assert lines and "cannot run --parallel pipeline" in lines[0] and why in lines[0], lines


def test_parallel_outside_torchrun_is_one_clear_line(tmp_path: Path) -> None:
    res = single(tmp_path / "x", "--parallel", "pipeline", "--epochs", "1")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: --parallel pipeline runs under torchrun")


def test_a_diverging_run_is_diverged_on_every_rank(tmp_path: Path) -> None:
    """A non-finite loss on any rank ends the unit on every rank at the epoch's end, as one
    process would: status ``diverged``, exit status 3, no test score (issue #14's outcome)."""
    res = torchrun(tmp_path / "nan", "--algo", "forward_forward", "--arch", "mlp:2x64", "--lr", "1e9",
                   "--epochs", "2", "--parallel", "pipeline")
    assert res.returncode != 0
    run = run_json(tmp_path / "nan")
    assert run["status"] == "diverged" and run["diverged"]["unit"] == "network"
    assert "test_accuracy" not in run["metrics"] or run["metrics"]["test_accuracy"] is None
    assert "exitcode  : 3" in res.stdout + res.stderr
