"""``localearn study`` on bad input found by probing (issue #23, D1 and D3-D5 and the minor items):
one ``error:`` line and exit status 2, nothing written where it should not be, no password on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from localearn.studies.spec import load_spec
from localearn.studies.storage import ensure_study, open_storage
from localearn.studies.worker import optuna_name
from studyutil import write_spec

from localearn.cli import main


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)  # tiny.toml
    (tmp_path / "AFILE").write_text("")
    (tmp_path / "ADIR").mkdir()
    (tmp_path / "bom.toml").write_bytes(b"\xff\xfe[study]\n")
    return tmp_path


def _one_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.out + captured.err
    return lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["tiny.toml", "--out", "AFILE"], "cannot use AFILE as the study directory"),
    (["tiny.toml", "--out", "AFILE/sub"], "cannot use AFILE/sub as the study directory"),
    (["ADIR"], "ADIR: cannot read the study spec"),
    (["bom.toml"], "bom.toml: not UTF-8 text"),
    (["tiny.toml", "--storage", "journal:/proc/nope/journal.log"], "cannot use /proc/nope/journal.log as the journal"),
    (["tiny.toml", "--storage", "journal:ADIR"], "journal storage ADIR is a directory"),
])
def test_file_system_problems_are_one_line(here: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                           needle: str) -> None:
    assert needle in _one_error(capsys, main(["study", "run", *args, "--no-progress"]))


def test_a_mistyped_storage_url_is_refused_before_anything_is_written(here: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in here.rglob("*"))
    url = "postgresql:/u:Secret99@127.0.0.1:5499/db"  # one slash: it used to become a journal file
    line = _one_error(capsys, main(["study", "run", "tiny.toml", "--storage", url, "--no-progress"]))
    assert "neither an RDB URL" in line and "u:***@127.0.0.1" in line and "Secret99" not in line
    assert sorted(p.name for p in here.rglob("*")) == before


def test_a_refused_budget_change_leaves_the_study_as_it_was(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study started with trials = 3 (its slots queued here, no training needed), rerun with 4."""
    out = here / "studies_out" / "tiny"
    out.mkdir(parents=True)
    started = load_spec(write_spec(out, name="tiny", trials=3))
    (out / "tiny.toml").rename(out / "spec.toml")
    storage = open_storage(None, out)
    for arm in started.arms:
        ensure_study(storage, optuna_name(started, arm), 3, {})
    kept = (out / "spec.toml").read_bytes()
    line = _one_error(capsys, main(["study", "run", str(write_spec(here, trials=4)), "--no-progress"]))
    assert "has 3 trials per arm, the spec 4" in line
    assert (out / "spec.toml").read_bytes() == kept and not (out / "study.json").exists()


@pytest.mark.parametrize("where", ["study", "arm"])
def test_names_are_one_folder(here: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    text = (here / "tiny.toml").read_text()
    text = text.replace('name = "tiny"', 'name = ".."') if where == "study" else \
        text.replace('algo = "mono_forward"', 'algo = "mono_forward"\nname = ".."')
    (here / "dots.toml").write_text(text)
    before = sorted(p.name for p in here.parent.iterdir())
    line = _one_error(capsys, main(["study", "run", "dots.toml", "--no-progress"]))
    assert "name: must be a plain name" in line
    assert sorted(p.name for p in here.parent.iterdir()) == before and not (here / "studies_out").exists()


def test_report_on_a_storage_it_cannot_read_is_an_error(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = {"name": "s", "seeds": [0, 1], "arms": {"digits/backprop": {"dataset": "digits", "arm": "backprop",
                                                                         "optuna_study": "s/digits/backprop"}}}
    (here / "s").mkdir()
    (here / "s" / "study.json").write_text(json.dumps(study))
    (here / "s" / "optimization_history_digits.png").write_bytes(b"an old plot")
    url = "postgresql://me:hunter2pw@127.0.0.1:1/studies"  # nothing listens on port 1
    line = _one_error(capsys, main(["study", "report", "s", "--storage", url]))
    assert "cannot open storage" in line and "hunter2pw" not in line
    assert sorted(p.name for p in (here / "s").iterdir()) == ["optimization_history_digits.png", "study.json"]
