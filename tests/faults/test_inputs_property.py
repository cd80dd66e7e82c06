"""The class, not the instances (issue #23): generated specs, CLI arguments, storage URLs and run
directories thrown at the command line, in-process. Each must succeed or give exactly one
``error:`` line with exit status 2: never a traceback, never a file outside the folder it may
write, never a password on disk. Training itself is not what is tested, so reaching it counts as
success: ``Trainer.fit`` and the study's tuning are replaced by a sentinel.

Hypothesis runs derandomized with no example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import localearn
from localearn.cli import main

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=60,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECRET = "Pw9secret"
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.integers(-2**70, 2**70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.lists(st.integers(0, 3),
                 max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


class Reached(Exception):
    """Training (or tuning) would start here: the input was accepted."""


def _reach(*_: Any, **__: Any) -> None:
    raise Reached


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("localearn.trainer.Trainer.fit", _reach)
    monkeypatch.setattr("localearn.studies.runner._tune", _reach)
    monkeypatch.setenv("LOCALEARN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LOCALEARN_DATA_DIR", raising=False)
    monkeypatch.delenv("LOCALEARN_STUDY_STORAGE", raising=False)
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "cache" not in p.relative_to(root).parts[:1]}


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], where: Path, may_write: Callable[[str], bool]) -> None:
    """``localearn ARGV`` in ``where``: success or one error line, files only where allowed."""
    before, cwd = _tree(where), os.getcwd()
    capsys.readouterr()
    os.chdir(where)
    try:
        code = main(argv)
    except Reached:
        code = 0
    except SystemExit as exc:  # argparse: its usage and one "localearn ...: error:" line, status 2
        code = int(exc.code or 0)
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    event(f"exit {code} " + (lines[-1].partition("error: ")[2][:50] if code and lines else ""))
    assert "Traceback" not in err, (argv, err)
    if code != 0:
        errors = [ln for ln in lines if ln.startswith("error: ") or ": error: " in ln]
        rest = [ln for ln in lines if ln not in errors and not ln.startswith(("usage:", " ", "note: "))]
        assert code == 2 and len(errors) == 1 and not rest, (argv, code, err)
    new = _tree(where) - before
    assert all(may_write(p) for p in new), (argv, sorted(new))
    on_disk = [p for p in where.rglob("*") if SECRET in str(p)
               or (p.is_file() and SECRET.encode() in p.read_bytes())]
    assert not on_disk and SECRET not in out + err, (argv, on_disk)


def _folder(parent: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=parent))


def _edit(tree: Any, place: tuple[Any, ...], value: list[Any] | None) -> None:
    """Delete (``value`` None) or set the entry at ``place`` of nested dicts and lists, if it has a parent."""
    node = tree
    for key in place[:-1]:
        ok = (isinstance(node, dict) and key in node) or (isinstance(node, list) and key < len(node))
        if not ok or not isinstance(node[key], (dict, list)):
            return
        node = node[key]
    if isinstance(node, list):
        return
    if value is None:
        node.pop(place[-1], None)
    else:
        node[place[-1]] = value[0]


# ------------------------------------------------------------------------------------ specs
TINY = {"study": {"name": "tiny", "dataset": "digits", "trials": 1, "epochs": 1, "seeds": [0, 1]},
        "arms": [{"algo": "mono_forward", "arch": "mlp:1x8"}]}
NAMES = st.sampled_from(["tiny", "..", ".", "a/b", "", " ", "x\\y", "é", "t\x00", "-n", "studies_out"])
SPEC_PLACES = st.sampled_from([
    ("study", "name"), ("study", "dataset"), ("study", "datasets"), ("study", "trials"), ("study", "epochs"),
    ("study", "patience"), ("study", "seeds"), ("study", "protocol"), ("study", "pruner"), ("study", "data_dir"),
    ("study", "device"), ("study", "idle_seconds"), ("study", "dataset_options"), ("study", "stop_metric"),
    ("study", "batch_size"), ("study", "nope"), ("study",), ("arms",), ("nope",), ("arms", 0, "algo"),
    ("arms", 0, "name"), ("arms", 0, "arch"), ("arms", 0, "schedule"), ("arms", 0, "options"), ("arms", 0, "fixed"),
    ("arms", 0, "search_space"), ("arms", 0, "trials"), ("arms", 0, "options", "prediction"),
    ("arms", 0, "fixed", "lr"), ("arms", 0, "search_space", "lr")])
SPEC_VALUES = JUNK.filter(lambda v: not isinstance(v, int) or -2 <= v <= 3) | NAMES | st.sampled_from([
    "mf", "backprop", "forward_gnn", "karate", "cora", "gcn:8x1", "mlp:", "greedy", "median", "matched_passes",
    "val_acc", "cpu", "/nonexistent", "../up", [0, 0], [0, 1, 2], ["digits", "karate"], {"low": 1e-4, "high": 1e-2},
    {"low": 1, "high": 0}, {"choices": []}, {"augment": True}, {"algo": "mf"}])
SPEC_EDITS = st.lists(st.tuples(SPEC_PLACES, st.none() | SPEC_VALUES.map(lambda v: [v])), max_size=3)


def _toml(spec: Any) -> bytes:
    try:
        return tomli_w.dumps(spec).encode()
    except (TypeError, ValueError):  # None, NUL and non-tables are not TOML: write them as text
        return repr(spec).encode(errors="replace")


@SETTINGS
@given(edits=SPEC_EDITS, raw=st.binary(max_size=12), as_bytes=st.integers(0, 9))
def test_generated_specs(sandbox: Path, capsys: pytest.CaptureFixture[str], edits: list[Any], raw: bytes,
                         as_bytes: int) -> None:
    where = _folder(sandbox)
    spec = copy.deepcopy(TINY)
    for place, value in edits:
        _edit(spec, place, value)
    (where / "s.toml").write_bytes(raw if as_bytes == 5 else _toml(spec))  # raw bytes one time in ten
    _run(capsys, ["study", "run", "s.toml", "--no-progress"], where, lambda p: p.startswith("studies_out"))


# ----------------------------------------------------------------------------- storage URLs
URLS = st.one_of(
    st.builds("{}:{}{}:{}@127.0.0.1:{}/db".format, st.sampled_from(["postgresql", "postgresql+psycopg", "mysql",
              "sqlite", "journal", "postgres", "pg"]), st.sampled_from(["//", "/", "", "///"]), st.just("u"),
              st.just(SECRET), st.sampled_from(["1", "x", ""])),
    st.builds("journal:{}".format, st.sampled_from(["j.log", "sub/j.log", ".", "/proc/x/j.log", "", "a:b@c"])),
    st.sampled_from(["sqlite:///s.db", "sqlite://", "://", "j.log", f"u:{SECRET}@host", "", " "]))


@SETTINGS
@given(url=URLS, command=st.sampled_from(["run", "report", "list"]))
def test_generated_storage_urls(sandbox: Path, capsys: pytest.CaptureFixture[str], url: str, command: str) -> None:
    where = _folder(sandbox)
    (where / "tiny.toml").write_bytes(_toml(TINY))
    run = ["study", "run", "tiny.toml", "--no-progress"]
    if command == "report":  # a study directory to report on (its tuning replaced by the sentinel)
        _run(capsys, run, where, lambda p: p.startswith("studies_out"))
    argv = {"run": run, "report": ["study", "report", "tiny"], "list": ["study", "list"]}[command]

    def allowed(p: str) -> bool:  # the study folder, or the one file or folder the URL names
        return p.startswith("studies_out") or (command == "run" and p in ("j.log", "sub", "sub/j.log", "s.db"))

    _run(capsys, [*argv, "--storage", url], where, allowed)


# ------------------------------------------------------------------------- train arguments
def _flag(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda v: [name, str(v)])


FLAGS = st.lists(st.one_of(
    _flag("--algo", st.sampled_from(["mf", "mono-forward", "backprop", "ff", "cafo", "forward_gnn", "x", ""])),
    _flag("--dataset", st.sampled_from(["digits", "karate", "cora", "nope", ""])),
    _flag("--arch", st.sampled_from(["mlp:1x8", "mlp:8-8", "cnn:4", "gcn:8x1", "mlp:0x8", "mlp:", "x:1", "mlp:1x8x"])),
    _flag("--epochs", st.integers(-1, 2) | st.text(max_size=3)), _flag("--batch-size", st.integers(-1, 64)),
    _flag("--lr", st.floats() | st.text(max_size=3)), _flag("--weight-decay", st.floats()),
    _flag("--patience", st.integers(-1, 2)), _flag("--seed", st.integers(-2**70, 2**70)),
    _flag("--split-seed", st.integers(-2**70, 2**70)), _flag("--prefix-cache-gb", st.floats()),
    _flag("--opt", st.builds("{}={}".format, st.sampled_from(["prediction", "input_head", "arch", "nope", ""]),
                             st.sampled_from(["last", "sum", "true", "1", "[1]", "{}", "null", ""]))),
    _flag("--data-opt", st.builds("{}={}".format, st.sampled_from(["augment", "split", "x"]), st.sampled_from(
        ["true", "0", "9", "null"]))),
    _flag("--schedule", st.sampled_from(["joint", "greedy", "x"])), _flag("--task", st.sampled_from(["link", "x"])),
    _flag("--optimizer", st.sampled_from(["sgd", "x"])), _flag("--stop-metric", st.sampled_from(["val_acc", "x"])),
    _flag("--device", st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "tpu", ""])),
    _flag("--kernels", st.sampled_from(["torch", "triton", "x"])),
    _flag("--parallel", st.sampled_from(["none", "pipeline", "ddp", "x"])), _flag("--split", st.text(max_size=4)),
    _flag("--replicas", st.integers(-1, 3)), _flag("--pipeline-depth", st.integers(-1, 3)),
    _flag("--dist-timeout", st.floats()), _flag("--data-dir", st.sampled_from(["data", "nope", "afile", ""])),
    _flag("--out", st.sampled_from(["o", "o/x", "afile", "afile/x", ""])),
    st.sampled_from([["--resume"], ["--no-restore"], ["--json"], ["--compile"], ["--bogus"]])), max_size=5)


@SETTINGS
@given(flags=FLAGS)
def test_generated_train_arguments(sandbox: Path, capsys: pytest.CaptureFixture[str], flags: list[list[str]]) -> None:
    where = _folder(sandbox)
    (where / "afile").write_text("")
    argv = ["train", "--no-progress", *[a for f in flags for a in f]]
    _run(capsys, argv, where, lambda p: p.split("/")[0] in ("o", "runs"))


# ---------------------------------------------------------------------------- run directories
PLACES = [("run", "algorithm"), ("run", "dataset"), ("run", "learner_options"), ("run", "learner_options", "arch"),
          ("run", "learner_options", "nope"), ("run", "dataset_options"), ("run", "split_seed"), ("run", "data_dir"),
          ("run", "recipe"), ("run",), ("config",), ("config", "epochs"), ("config", "lr"), ("config", "parallel"),
          ("config", "kernels"), ("config", "nope"), ("model",), ("optimizers",), ("trainer",),
          ("trainer", "stage_index"), ("trainer", "history"), ("meters",), ("best_state",), ("format",), ("complete",)]
VALUES = JUNK | st.sampled_from(["mf", "backprop", "forward_gnn", "karate", "cora", "mlp:1x32", "evilmod:factory",
                                 "..", "/"]) | st.just(torch.zeros(2))
EDITS = st.lists(st.tuples(st.sampled_from(PLACES), st.none() | VALUES.map(lambda v: [v])), max_size=3)




@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("template") / "run"
    localearn.fit("mf", "digits", arch="mlp:1x16", epochs=1, out=out, progress=False)
    return dict(torch.load(out / "checkpoint.pt", weights_only=True))


@settings(SETTINGS, max_examples=120)
@given(edits=EDITS, layout=st.sampled_from(["plain"] * 4 + ["rank", "bytes", "dir", "none"]),
       junk=st.binary(max_size=16), command=st.sampled_from(["eval", "resume"]))
def test_generated_run_directories(sandbox: Path, capsys: pytest.CaptureFixture[str], template: dict[str, Any],
                                   edits: list[Any], layout: str, junk: bytes, command: str) -> None:
    where = _folder(sandbox)
    run = where / "run"
    ckpt = {k: (dict(v) if isinstance(v, dict) else v) for k, v in template.items()}
    ckpt["run"] = {**template["run"], "learner_options": dict(template["run"]["learner_options"])}
    for place, value in edits:
        _edit(ckpt, place, value)
    target = run / "rank0" / "checkpoint.pt" if layout == "rank" else run / "checkpoint.pt"
    target.parent.mkdir(parents=True)
    if layout in ("plain", "rank"):
        torch.save(ckpt, target)
    elif layout == "bytes":
        target.write_bytes(junk)
    elif layout == "dir":
        target.mkdir()
    argv = ["eval", "run"] if command == "eval" else ["train", "--out", "run", "--resume", "--no-progress"]
    _run(capsys, argv, where, lambda p: False)
