"""A rank that dies: the job stops with a clear error, and torchrun's restart resumes it (issues #13, #23).

Fault injection for every training mode (one-process joint and greedy under a one-process
torchrun, the layer pipeline joint and greedy, the pipeline with replicas, DDP): one rank is
SIGKILLed right after a checkpoint and torchrun's restart must reach exactly the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distutil import ENV, finish, max_gap, model, run_json

from localearn.cli import main

# ~1 s per epoch per rank on one thread: long enough to kill a rank mid-run.
SLOW = ("--algo", "mono_forward", "--dataset", "digits", "--arch", "mlp:4x768", "--schedule", "joint",
        "--batch-size", "32", "--patience", "100")


def _rank_pid(out: Path, rank: int) -> int | None:
    """The pid of the worker of ``rank`` training into ``out`` (read from /proc: Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmd and f"RANK={rank}".encode() in env and b"localearn" in b" ".join(cmd):
            return int(entry.name)
    return None


def _epochs(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True)["trainer"]["global_epoch"])
    except Exception:  # not written yet, or being replaced
        return 0


def _wait_for_epochs(out: Path, rank: int, epochs: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while _epochs(out / f"rank{rank}" / "checkpoint.pt") < epochs:
        assert proc.poll() is None, "".join(proc.communicate())
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


TINY = ("--algo", "mono_forward", "--dataset", "digits", "--arch", "mlp:2x32", "--epochs", "2",
        "--batch-size", "64", "--lr", "1e-2", "--patience", "100")
# mode: (options, ranks, "RANK:SAVES" killed). A rank saves after each epoch and at each unit's end,
# so mono_forward greedy on mlp:2x32 saves 3 times per unit: "0:4" dies one epoch into unit 2.
MODES = {
    "joint": (("--schedule", "joint"), 1, "0:1"),
    "greedy": (("--schedule", "greedy"), 1, "0:4"),
    "pipeline": (("--schedule", "joint", "--parallel", "pipeline"), 2, "1:1"),
    # S2: during unit 1 rank 1 takes no step, so ranks are at different step counts.
    "greedy_pipeline": (("--schedule", "greedy", "--parallel", "pipeline", "--split", "1,1"), 2, "1:1"),
    "replicas": (("--schedule", "joint", "--parallel", "pipeline", "--replicas", "2"), 4, "3:1"),
    "ddp": (("--schedule", "joint", "--parallel", "ddp"), 2, "1:1"),
}


def _job(out: Path, args: tuple[str, ...], nproc: int, kill: str | None) -> subprocess.CompletedProcess[str]:
    """torchrun --max-restarts 1 of ``python -m killer train ...`` (see killer.py)."""
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), ENV.get("PYTHONPATH", "")])}
    if kill is not None:
        env["LOCALEARN_TEST_KILL"] = kill
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=1", "-m", "killer", "train", "--no-progress", "--out", str(out), *args]
    return finish(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_rank_killed_after_a_checkpoint_restarts_to_the_uninterrupted_result(tmp_path: Path, mode: str) -> None:
    """Every training mode: SIGKILL one rank right after a checkpoint under torchrun --max-restarts 1;
    the restarted job completes with the parameters and history of the same run uninterrupted."""
    opts, nproc, kill = MODES[mode]
    args = (*TINY, *opts)
    if nproc == 1:  # the reference in this process: the same command without a launcher's start-up
        assert main(["train", "--no-progress", "--out", str(tmp_path / "whole"), *args]) == 0
    else:
        whole = _job(tmp_path / "whole", args, nproc, None)
        assert whole.returncode == 0, whole.stdout + whole.stderr
    hit = _job(tmp_path / "hit", args, nproc, kill)
    assert hit.returncode == 0, hit.stdout + hit.stderr
    assert "failed (exitcode: -9)" in hit.stderr, hit.stderr  # the first round was SIGKILLed
    a, b = run_json(tmp_path / "whole"), run_json(tmp_path / "hit")
    assert b["status"] == "complete"
    if nproc > 1:
        assert a["distributed"]["restarts"] == 0 and b["distributed"]["restarts"] == 1
    assert [h["global_epoch"] for h in b["history"]] == [h["global_epoch"] for h in a["history"]]  # none lost
    assert [h["val_loss"] for h in b["history"]] == [h["val_loss"] for h in a["history"]]
    assert max_gap(model(tmp_path / "whole"), model(tmp_path / "hit")) == 0.0
    assert b["metrics"]["test_accuracy"] == a["metrics"]["test_accuracy"] > 0.8


def test_a_dead_peer_is_one_clear_error_not_a_hang(tmp_path: Path) -> None:
    """Two ranks launched by hand (as on two machines, no torchrun agent to clean up)."""
    out = tmp_path / "run"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, "-m", "localearn", "train", "--no-progress", "--out", str(out), *SLOW,
               "--epochs", "50", "--parallel", "pipeline", "--dist-timeout", "30"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        _wait_for_epochs(out, 1, 2, procs[1])
        procs[1].send_signal(signal.SIGKILL)
        text = procs[0].communicate(timeout=120)[0]  # within the timeout, not a hang
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode != 0
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert errors and "rank 0: lost rank 1" in errors[-1] and "resume" in errors[-1], text
    assert (out / "rank0" / "checkpoint.pt").is_file()  # its completed epochs are kept
