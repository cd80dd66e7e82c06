"""A run directory is data, never code (issue #23, S1).

The attack: a checkpoint that passes the weights-only loader but stores ``run.data_dir`` pointing
at Planetoid raw files beside it that are pickles with a ``__reduce__`` (PyG's reader unpickles
them). ``localearn eval DIR`` and ``localearn train --out DIR --resume`` followed that path and
ran the payload. Now data comes only from the user's ``--data-dir``, ``$LOCALEARN_DATA_DIR`` or
``./data``, and ``eval`` says which folder it read.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import localearn
from localearn.cli import main
from localearn.data import load_dataset

FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


class _Payload:
    """Unpickling this creates ``marker`` (what a real payload would do with a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _evil_run(root: Path, marker: Path, dataset: str = "citeseer", pyg: str = "CiteSeer") -> Path:
    """The reported run directory: a plain-data checkpoint whose run.data_dir names its own crafted data."""
    run = root / "evilrun"
    raw = run / "data" / "planetoid" / pyg / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        (raw / f"ind.{dataset}.{f}").write_bytes(pickle.dumps(_Payload(marker)))
    info = {"algorithm": "forward_gnn", "dataset": dataset, "data_dir": "evilrun/data", "learner_options": {},
            "dataset_options": {}, "split_seed": 0}
    torch.save({"format": 1, "complete": True, "model": {}, "config": {}, "run": info}, run / "checkpoint.pt")
    return run


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The parent folder of the run as the working directory, with an empty cache and no data env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCALEARN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LOCALEARN_DATA_DIR", raising=False)
    return tmp_path


def _one_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_the_crafted_files_are_a_live_payload(sandbox: Path) -> None:
    """The control: read as data, the crafted folder does run its payload (so the tests below can fail)."""
    marker = sandbox / "PWNED"
    run = _evil_run(sandbox, marker)
    with pytest.raises(Exception):  # noqa: B017 - whatever PyG makes of the payload's return value
        load_dataset("citeseer", run / "data")
    assert marker.exists()


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_stored_data_dir_is_never_followed(sandbox: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    marker = sandbox / "PWNED"
    _evil_run(sandbox, marker)
    args = ["eval", "evilrun"] if command == "eval" else ["train", "--out", "evilrun", "--resume", "--no-progress"]
    line = _one_error(capsys, main(args))
    assert not marker.exists(), "a path stored in the run directory was followed"
    assert "CiteSeer: missing" in line and "data/planetoid/CiteSeer/raw" in line and "evilrun" not in line
    assert not (sandbox / "cache" / "planetoid" / "CiteSeer").exists()  # nothing was even copied


def test_started_inside_the_run_directory_its_files_are_not_the_default_data(
        sandbox: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    marker = sandbox / "PWNED"
    run = _evil_run(sandbox, marker)
    monkeypatch.chdir(run)  # ./data is now the crafted folder
    for args in (["eval", "."], ["train", "--out", ".", "--resume"]):
        line = _one_error(capsys, main(args))
        assert "lies inside the run directory" in line and "--data-dir" in line
    assert not marker.exists()


def test_fields_that_could_name_code_are_ignored(sandbox: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A module named in the run directory is never imported, even when it is importable."""
    marker = sandbox / "PWNED"
    (sandbox / "evilmod.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
                                        "def factory(*a, **k):\n    return None\n")
    monkeypatch.syspath_prepend(str(sandbox))
    out = sandbox / "run"
    localearn.fit("mf", "digits", arch="mlp:1x16", epochs=1, out=out, progress=False)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["run"].update(model="evilmod:factory", module="evilmod", factory="evilmod.factory", data_dir=str(sandbox))
    ckpt["run"]["learner_options"]["arch"] = "mlp:1x16"
    torch.save(ckpt, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert "evilmod" not in sys.modules and not marker.exists()
    assert "data: digits is bundled (no data folder read)" in capsys.readouterr().out


def test_eval_reads_the_users_folder_and_says_which(sandbox: Path, shared_data: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A real Cora run whose recorded data folder is gone: eval uses --data-dir and prints it."""
    trained = sandbox / "trained-on"
    shutil.copytree(shared_data / "planetoid" / "Cora" / "raw", trained / "planetoid" / "Cora" / "raw")
    localearn.fit("backprop_gnn", "cora", data_dir=trained, epochs=2, out=sandbox / "run", progress=False)
    mine = sandbox / "mine"
    shutil.move(trained, mine)  # the recorded folder no longer exists
    capsys.readouterr()
    line = _one_error(capsys, main(["eval", "run"]))  # no --data-dir: the default ./data, which lacks Cora
    assert "data/planetoid/Cora/raw" in line and "trained-on" not in line
    assert main(["eval", "run", "--data-dir", str(mine)]) == 0
    out = capsys.readouterr().out
    assert f"data: cora from {mine.resolve()} (--data-dir)" in out and "backprop_gnn on cora test: accuracy" in out
