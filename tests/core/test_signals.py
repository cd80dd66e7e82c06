"""A real Ctrl-C or SIGTERM to `localearn train`: the run stops after the current step, saved as
``interrupted``, exit 130, and resumes to completion (no lost results; brief)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ("--algo", "mono_forward", "--dataset", "digits", "--arch", "mlp:3x512", "--schedule", "joint",
        "--epochs", "60", "--patience", "60", "--batch-size", "16", "--no-progress")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_an_interrupted_run_that_resumes(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "localearn", "train", *ARGS, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists():  # at least one epoch done
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signum)  # once: it must be enough
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failing test leaves no training process behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "--resume" in err
    partial = json.loads((out / "run.json").read_text())
    assert partial["status"] == "interrupted" and 1 <= len(partial["history"]) < 60
    done = subprocess.run([sys.executable, "-m", "localearn", "train", "--out", str(out), "--resume",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    final = json.loads((out / "run.json").read_text())
    assert final["status"] == "complete" and len(final["history"]) == 60
