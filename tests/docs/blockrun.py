"""Run one docs page's marked blocks in one process, forked from a server that imported localearn once.

``tests/docs/test_docs_run.py`` turns each page into a list of :class:`Step` objects and starts one
process per page through multiprocessing's fork server, which imports this module, torch, localearn
and every shipped learner once (:data:`PRELOAD`), before any process computes anything, so a fork
inherits no threads and no page pays for the imports. A page's steps run in order in its own
directory:

* ``python``: consecutive Python blocks, as one script (``runpy``, as ``__main__``);
* ``cli``: a line ``localearn ARGS [> FILE]`` as ``localearn.cli.main(ARGS)`` in this process, with
  ``--epochs 1 --no-progress`` appended to ``train`` (argparse keeps the last value); a non-zero
  status fails the page, as ``set -e`` would;
* ``python -c CODE`` lines, as a script of that code;
* ``bash``: any other block (pipes, ``||``, ``$?``, continuations, ``torchrun``), whose exit status
  or processes matter, under ``bash -c`` with ``set -euo pipefail`` and the same short ``train``.

Every step's output goes to the page's log; the process exits with the first failing step's status.
"""

from __future__ import annotations

import contextlib
import os
import resource
import runpy
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from localearn.algorithms import SHIPPED

import localearn.cli

#: What the fork server imports once (the learners too, which the test process itself never needs).
PRELOAD = ["blockrun", "torch", "localearn.cli", "localearn.run", "localearn.trainer", "localearn.studies.cli",
           *sorted({module for module, _ in SHIPPED.values()})]
SHORT_TRAIN = ["--epochs", "1", "--no-progress"]
BASH = """set -euo pipefail
localearn() {
  if [ "${1:-}" = train ]; then command localearn "$@" --epochs 1 --no-progress; else command localearn "$@"; fi
}
"""
ENV = {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


@dataclass
class Step:
    """One thing a page runs: ``kind`` is ``python``, ``cli``, ``python-c`` or ``bash``."""

    kind: str
    label: str  # "page.md, block at line N"
    text: str = ""  # the Python source, the code of ``python -c``, or the bash script
    argv: list[str] = field(default_factory=list)  # ``cli``: the arguments after ``localearn``
    stdout: str = ""  # ``cli``: the file a ``> FILE`` redirection names


def _script(source: str, name: str) -> int:
    """Run ``source`` as the script ``name`` (written to the page's directory, kept for reading)."""
    Path(name).write_text(source, encoding="utf-8")
    sys.argv = [name]
    try:
        runpy.run_path(name, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # a failing block, reported with its traceback
        traceback.print_exc()
        return 1
    return 0


def _cli(step: Step) -> int:
    argv = step.argv + (SHORT_TRAIN if step.argv[:1] == ["train"] else [])
    with contextlib.ExitStack() as stack:
        if step.stdout:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(step.stdout, "w"))))
        try:
            return localearn.cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            return exc.code if isinstance(exc.code, int) else 1
        except Exception:  # a failing command, reported with its traceback
            traceback.print_exc()
            return 1


def _run(step: Step, index: int) -> int:
    if step.kind == "python":
        return _script(step.text, f"_docs_block_{index}.py")
    if step.kind == "python-c":
        return _script(step.text, f"_docs_c_{index}.py")
    if step.kind == "cli":
        return _cli(step)
    return subprocess.run(["bash", "-c", BASH + step.text], check=False).returncode


def run_page(steps: list[Step], workdir: str, log: str) -> None:
    """The page process: its own session (a hang is killed with everything it started), its
    directory, its log on stdout and stderr, then each step until one fails."""
    os.setsid()
    os.chdir(workdir)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(ENV)
    torch.set_num_threads(1)
    status = 0
    for index, step in enumerate(steps):
        print(f"### {step.label} ({step.kind})", file=sys.stderr, flush=True)
        status = _run(step, index)
        sys.stdout.flush()
        sys.stderr.flush()
        if status:
            print(f"### {step.label}: exit status {status}", file=sys.stderr, flush=True)
            break
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    Path("_cpu_seconds").write_text(str(sum(u.ru_utime + u.ru_stime for u in usage)))
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status if 0 <= status < 256 else 1)  # the process's exit code (finalizers run, atexit does not)
