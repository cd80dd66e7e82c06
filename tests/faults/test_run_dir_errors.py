"""Run directories that do not fit, raw pickles and --resume with other flags (issue #23, D2 and minor):
one ``error:`` line (or one ``note:`` line) and nothing else on stderr."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import localearn
from localearn.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    localearn.fit("mf", "digits", arch="mlp:1x16", epochs=2, lr=1e-2, out=out, progress=False)
    return out


def _copy(run: Path, dest: Path, change: Any = None) -> Path:
    dest.mkdir(parents=True)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    if change is not None:
        change(ckpt)
    torch.save(ckpt, dest / "checkpoint.pt")
    return dest


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_weights_that_do_not_fit_are_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              command: str) -> None:
    def wider(ckpt: dict[str, Any]) -> None:
        ckpt["run"]["learner_options"]["arch"] = "mlp:1x32"

    run = _copy(trained, tmp_path / "run", wider)
    args = ["eval", str(run)] if command == "eval" else ["train", "--out", str(run), "--resume", "--no-progress"]
    assert main(args) == 2
    line = _stderr_line(capsys)
    assert line.startswith(f"error: checkpoint {run}") and "does not fit this learner: size mismatch for" in line
    assert "more)" in line  # the other mismatches counted, not listed


def test_a_checkpoint_missing_its_parts_is_one_line(trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path / "run", lambda ckpt: ckpt.pop("optimizers"))
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "cannot be resumed: no 'optimizers' entry" in _stderr_line(capsys)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [True, False])
def test_a_raw_pickle_is_one_line_without_torchs_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         payload: bool) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "run").mkdir()
    state = {"format": 1, "run": {"evil": _Payload(marker)} if payload else {}}
    (tmp_path / "run" / "checkpoint.pt").write_bytes(pickle.dumps(state, protocol=4))
    assert main(["eval", str(tmp_path / "run")]) == 2
    line = _stderr_line(capsys)  # no "UserWarning: Detected pickle protocol 4" lines before it
    if payload:
        assert "refusing to load" in line and "it would import posix.system" in line
    else:
        assert "not a readable localearn checkpoint (not a torch.save zip file)" in line
    assert not marker.exists()


def test_resume_names_the_flags_its_stored_settings_override(trained: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path / "run")
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--epochs", "5", "--lr", "0.5",
                 "--seed", "0", "--arch", "mlp:1x16", "--schedule", "joint"]) == 0
    line = _stderr_line(capsys)
    assert line == (f"note: --resume continues {run} with its stored settings; ignored: epochs=5 (kept 2), "
                    "lr=0.5 (kept 0.01), schedule='joint' (kept 'greedy')")  # --seed 0, the arch: as stored
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
