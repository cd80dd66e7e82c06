"""Helpers for the study tests: tiny specs: digits (bundled), mlp:1x32, a couple of epochs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

TINY = """
[study]
name = "{name}"
dataset = "digits"
trials = {trials}
epochs = {epochs}
seeds = [0, 1]
{extra}

[[arms]]
algo = "backprop"
arch = "mlp:1x32"

[[arms]]
algo = "mono_forward"
arch = "mlp:1x32"
"""


def write_spec(folder: Path, name: str = "tiny", trials: int = 2, epochs: int = 1, extra: str = "") -> Path:
    """A two-arm digits spec (backprop and Mono-Forward on mlp:1x32) written to ``folder``."""
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(name=name, trials=trials, epochs=epochs, extra=extra))
    return path


STARTED: list[subprocess.Popen[str]] = []  # reaped by conftest's autouse fixture


def localearn_cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """Start ``localearn ...`` in a child process (its own pid, killable) in its own process group,
    so a failing test still leaves no coordinator or worker running (see conftest)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "localearn.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    STARTED.append(proc)
    return proc


def kill_started() -> None:
    """SIGKILL every process group a test started (workers included) and reap the leaders."""
    while STARTED:
        proc = STARTED.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)
