"""Launch ``localearn train`` under torchrun (2 gloo ranks, one thread each) or in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("RANK", None)
ENV.pop("WORLD_SIZE", None)


def torchrun(out: Path, *args: str, nproc: int = 2, extra: tuple[str, ...] = (),
             background: bool = False) -> Any:
    """``torchrun --standalone --nproc-per-node N -m localearn train ... --out OUT``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra,
           "-m", "localearn", "train", "--no-progress", "--out", str(out), *args]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the agent and every worker
    if background:
        return proc
    return finish(proc)


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Wait for ``proc``; on a timeout or a failing test, kill its whole process group (no orphaned
    torchrun workers)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def single(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same run in one process."""
    cmd = [sys.executable, "-m", "localearn", "train", "--no-progress", "--out", str(out), *args]
    return finish(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True))


def run_json(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "run.json").read_text()))


def model(folder: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's parameters; a distributed run's rank folders merged (pipeline: disjoint)."""
    files = sorted(folder.glob("rank*/checkpoint.pt")) or [folder / "checkpoint.pt"]
    merged: dict[str, torch.Tensor] = {}
    for f in files:
        merged.update(torch.load(f, weights_only=True)["model"])
    return merged


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
