"""A rank that dies: the job stops with a clear error, and torchrun's restart resumes it (issue #13)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from distutil import ENV, finish, run_json, torchrun

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


def test_sigkilled_rank_is_restarted_and_the_run_resumes(tmp_path: Path) -> None:
    out, epochs = tmp_path / "run", 10
    job = torchrun(out, *SLOW, "--epochs", str(epochs), "--parallel", "pipeline",
                   extra=("--max-restarts", "1"), background=True)
    try:
        _wait_for_epochs(out, 1, 2, job)
        victim = _rank_pid(out, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
    finally:
        done = finish(job)  # kills the job's whole process group if it is still running
    assert done.returncode == 0, done.stdout + done.stderr
    run = run_json(out)
    assert run["status"] == "complete" and run["distributed"]["restarts"] == 1
    assert [h["global_epoch"] for h in run["history"]] == list(range(1, epochs + 1))  # none lost, none repeated
    assert run["units"][0]["epochs"] == epochs and run["metrics"]["test_accuracy"] > 0.5


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
