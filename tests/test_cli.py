"""The command line as a user meets it: real runs, one-line errors, kill -9 and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "localearn.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--algo", "nope"], "unknown algorithm 'nope'; valid names:"),
        (["train", "--arch", "mlp:zz"], "bad architecture spec 'mlp:zz'"),
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], "mnist not found under /nonexistent"),
        (["train", "--epochs", "0"], "epochs must be a positive integer"),
        (["train", "--opt", "foo=1"], "mono_forward has no option 'foo'"),
        (["train", "--opt", "prediction"], "--opt expects KEY=VALUE"),
        (["train", "--opt", "input_head=notabool"], "mono_forward option input_head='notabool' must be a bool"),
        (["train", "--data-opt", "foo=1"], "dataset digits has no option 'foo'; it takes no options"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--arch", "mlp:100-10"], "declares input width 100"),
        (["eval", "/nonexistent/checkpoint.pt"], "no checkpoint at /nonexistent/checkpoint.pt"),
        (["train", "--algo", "fgnn", "--dataset", "digits"], "forward_gnn takes graph data, but dataset 'digits'"),
        (["train", "--algo", "mf", "--dataset", "karate"], "mono_forward takes image data, but dataset 'karate'"),
        (["train", "--task", "link"], "mono_forward trains only the classification task; --task link needs"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    with_out = args[0] == "train" and "--resume" not in args
    res = run_cli(*args, "--out", str(tmp_path / "o")) if with_out else run_cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_algos_lists_learners_and_papers() -> None:
    res = run_cli("algos", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["mono_forward"]["aliases"] == ["mf"]
    assert "2501.09238" in rows["mono_forward"]["paper"]


def test_kill_9_mid_epoch_then_resume(tmp_path: Path) -> None:
    """SIGKILL while training; --resume finishes with the same total epochs and a valid run.json."""
    out = tmp_path / "run"
    args = ["train", "--algo", "mf", "--arch", "mlp:2x1000", "--epochs", "6", "--batch-size", "32",
            "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists()
    res = run_cli("train", "--out", str(out), "--resume", "--no-progress")
    assert res.returncode == 0, res.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    assert [h["global_epoch"] for h in run["history"]] == list(range(1, len(run["history"]) + 1))
    assert sum(u["epochs"] for u in run["units"]) == len(run["history"]) == run["metrics"]["epochs"]
    assert [u["unit"] for u in run["units"]] == ["layer0", "layer1"]
    ev = run_cli("eval", str(out), "--json")
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(run["metrics"]["test_accuracy"])


def test_train_summary_and_run_json(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = run_cli("train", "--algo", "bp", "--arch", "mlp:1x64", "--epochs", "15", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout
    assert any(line.split()[:3] == ["energy", "not", "measured"] for line in res.stdout.splitlines())
    run = json.loads((out / "run.json").read_text())
    assert run["algorithm"] == "backprop" and run["metrics"]["test_accuracy"] > 0.8
    again = run_cli("train", "--out", str(out))
    assert again.returncode == 2 and "already holds a run" in again.stderr
