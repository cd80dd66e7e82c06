"""The docs run: every code block marked ``<!-- docs-test -->`` in the docs is executed.

A page's marked blocks run in page order, in a fresh directory, with short settings
(:mod:`blockrun` runs them):

* ``python`` blocks as scripts; consecutive ones form one script, as a reader would paste them;
* ``bash`` blocks line by line in one process when every line is ``localearn ARGS [> FILE]`` or
  ``python -c CODE`` (``localearn train`` gets ``--epochs 1 --no-progress``: argparse keeps the last
  value, so a block's own ``--epochs`` is cut); any other bash block (``||``, ``$?``, pipes,
  continuations, ``torchrun``) runs under ``bash`` as it is written;
* ``<!-- docs-test file=NAME -->`` blocks (a study spec, say) are written to NAME for later blocks.

Every page is one process forked from a server that imported torch, localearn and the learners
once, so a page pays for its training and not for its interpreters. Every dataset is bundled
(digits, KarateClub), so nothing needs the network. A page fails when any step exits non-zero; the
failure names the page, the block's line and the output's tail. Pages run two at a time. The
timeout only guards against a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shlex
import signal
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from blockrun import PRELOAD, Step, run_page
from docsutil import DOCS, pages

BLOCK = re.compile(r"<!-- docs-test(?P<opts>[^>]*)-->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)
HANG_GUARD_S = 1200
AT_ONCE = 2


def _name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix() if page.is_relative_to(DOCS) else page.name


def marked(page: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, file name or "", body) of each marked block of ``page``."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        opts = dict(o.split("=", 1) for o in m.group("opts").split() if "=" in o)
        out.append((text[: m.start()].count("\n") + 2, m.group("lang"), opts.get("file", ""), m.group("body")))
    return out


def line_step(line: str, label: str) -> Step | None:
    """``localearn ARGS [> FILE]`` or ``python -c CODE`` as an in-process step; None otherwise."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: leave it to bash
        return None
    if words[:2] == ["python", "-c"] and len(words) == 3:
        return Step("python-c", label, text=words[2])
    target = ""
    if len(words) >= 2 and words[-2] == ">":
        words, target = words[:-2], words[-1]
    shell = {"|", "||", "&&", ";", "&", "<", ">", ">>", "(", ")"}
    if words[:1] != ["localearn"] or any(w in shell or "$" in w or "`" in w for w in words):
        return None
    return Step("cli", label, argv=words[1:], stdout=target)


def bash_steps(body: str, label: str) -> list[Step]:
    """The block's lines as in-process steps, or the whole block as one bash step."""
    lines = [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if "\\\n" in body or not lines:
        return [Step("bash", label, text=body)]
    steps = [line_step(ln, label) for ln in lines]
    return [s for s in steps if s is not None] if all(steps) else [Step("bash", label, text=body)]


def page_steps(page: Path, workdir: Path) -> list[Step]:
    """Write the page's files into ``workdir``; return the steps that run its blocks in order."""
    steps: list[Step] = []
    python: list[str] = []
    first = 0

    def flush() -> None:
        if python:
            steps.append(Step("python", f"{_name(page)}, block at line {first}", text="\n".join(python)))
            python.clear()

    for line, lang, file, body in marked(page):
        label = f"{_name(page)}, block at line {line}"
        if file:
            (workdir / file).write_text(body + "\n", encoding="utf-8")
        elif lang == "python":
            first = first if python else line
            python.append(f"# --- {label} ---\n{body}\n")
        elif lang == "bash":
            flush()
            steps += bash_steps(body, label)
        else:
            raise AssertionError(f"{page}:{line}: a docs-test {lang} block needs file=NAME")
    flush()
    return steps


def _context() -> Any:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")  # slower (imports per page), same results
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # no effect if another test started the server first
    return ctx


def run_pages(todo: list[Path], root: Path) -> tuple[list[str], float]:
    """Run every page (``AT_ONCE`` at a time); the failure reports, and the pages' CPU seconds."""
    ctx = _context()
    waiting = list(todo)
    running: dict[Any, tuple[Path, Path, Any, float]] = {}
    failures: list[str] = []
    while waiting or running:
        while waiting and len(running) < AT_ONCE:
            page = waiting.pop(0)
            workdir = root / _name(page).removesuffix(".md").replace("/", "_")
            workdir.mkdir(parents=True)
            proc = ctx.Process(target=run_page, args=(page_steps(page, workdir), str(workdir),
                                                      str(workdir / "_log.txt")))
            proc.start()
            running[proc.sentinel] = (page, workdir, proc, time.monotonic())
        for sentinel in wait(list(running), timeout=10):
            page, workdir, proc, _ = running.pop(sentinel)
            proc.join()
            if proc.exitcode != 0:
                log = (workdir / "_log.txt").read_text(errors="replace")
                failures.append(f"{_name(page)}: exit status {proc.exitcode}\n{log[-4000:]}")
        for sentinel, (page, _, proc, started) in list(running.items()):
            if time.monotonic() - started > HANG_GUARD_S:  # a hang: kill the page's session (torchrun's ranks too)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.join()
                failures.append(f"{_name(page)}: still running after {HANG_GUARD_S} s")
                del running[sentinel]
    cpu = sum(float(p.read_text()) for p in root.glob("*/_cpu_seconds"))
    return failures, cpu


def test_the_getting_started_page_and_every_guide_have_marked_blocks() -> None:
    for page in [DOCS / "getting_started.md", *sorted((DOCS / "guides").glob("*.md"))]:
        assert marked(page), f"{_name(page)} has no block marked <!-- docs-test -->"


def test_a_bash_block_runs_in_process_only_when_that_is_equivalent(tmp_path: Path) -> None:
    simple = bash_steps("localearn algos --json > algos.json   # a comment\n"
                        "python -c \"import json; print(len(json.load(open('algos.json'))))\"", "x")
    assert [(s.kind, s.argv, s.stdout) for s in simple] == [("cli", ["algos", "--json"], "algos.json"),
                                                            ("python-c", [], "")]
    for shell in ("localearn train --lr 1e9 || echo \"exit status $?\"", "localearn algos | head -1",
                  "torchrun -m localearn train", "localearn train \\\n  --algo mf", "echo $HOME"):
        assert [s.kind for s in bash_steps(shell, "x")] == ["bash"], shell
    page = tmp_path / "page.md"  # consecutive Python blocks are one script; a bash block splits them
    page.write_text("<!-- docs-test -->\n```python\na = 1\n```\n<!-- docs-test -->\n```python\nprint(a)\n```\n"
                    "<!-- docs-test -->\n```bash\nlocalearn env\n```\n<!-- docs-test -->\n```python\nb = 2\n```\n")
    steps = page_steps(page, tmp_path)
    assert [s.kind for s in steps] == ["python", "cli", "python"] and "print(a)" in steps[0].text


def test_a_failing_block_fails_its_page_with_the_line_and_the_error(tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok.md", tmp_path / "bad.md"
    ok.write_text("<!-- docs-test -->\n```bash\nlocalearn algos --json > algos.json\n```\n")
    bad.write_text("Text.\n\n<!-- docs-test -->\n```bash\nlocalearn train --algo nope\n```\n"
                   "<!-- docs-test -->\n```python\nprint('never runs')\n```\n")
    failures, _ = run_pages([ok, bad], tmp_path / "run")
    assert (tmp_path / "run" / "ok" / "algos.json").stat().st_size > 0
    assert len(failures) == 1 and failures[0].startswith("bad.md: exit status 2"), failures
    assert "bad.md, block at line 4" in failures[0] and "error: unknown algorithm 'nope'" in failures[0]
    assert "never runs" not in failures[0]


def test_marked_blocks_run(tmp_path: Path) -> None:
    todo = [p for p in pages() if marked(p)]
    failures, cpu = run_pages(todo, tmp_path)
    print(f"docs blocks: {len(todo)} pages, {cpu:.0f} CPU seconds in the page processes")
    assert not failures, "\n\n".join(failures)
