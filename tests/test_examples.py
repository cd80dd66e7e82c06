"""Every script in ``examples/`` runs (issue #15, item 5): each one in a fresh interpreter, with one
epoch (``LOCALEARN_EXAMPLE_EPOCHS=1``) and one thread so that the suite stays fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_every_learner_has_an_example() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"mono_forward", "forward_forward", "cafo", "noprop", "counter_current", "forward_gnn",
            "backprop"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    assert len(script.read_text().splitlines()) <= 50, f"{script.name} is longer than 50 lines"
    env = {**os.environ, "LOCALEARN_EXAMPLE_EPOCHS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "accuracy" in res.stdout  # every example reports the accuracy it reached
    assert not list(tmp_path.iterdir()), "an example left files in the working directory"
