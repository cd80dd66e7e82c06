"""The docs run: every code block marked ``<!-- docs-test -->`` in the docs is executed.

A page's marked blocks run in page order, in a fresh directory, with short settings:

* ``bash`` blocks under ``set -euo pipefail``, where ``localearn train`` gets ``--epochs 1
  --no-progress`` appended (argparse keeps the last value, so a block's own ``--epochs`` is cut);
* ``python`` blocks as scripts; consecutive ones form one script, as a reader would paste them;
* ``<!-- docs-test file=NAME -->`` blocks (a study spec, say) are written to NAME for later blocks.

Every dataset is bundled (digits, KarateClub), so nothing needs the network. A page fails when
any block exits non-zero; the failure names the page, the block's line and the output's tail.
Pages run two at a time. The timeout only guards against a hang.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docsutil import DOCS, pages

BLOCK = re.compile(r"<!-- docs-test(?P<opts>[^>]*)-->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)
SHORT_TRAIN = """localearn() {
  if [ "${1:-}" = train ]; then command localearn "$@" --epochs 1 --no-progress; else command localearn "$@"; fi
}
"""
HANG_GUARD_S = 1200


def marked(page: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, file name or "", body) of each marked block of ``page``."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        opts = dict(o.split("=", 1) for o in m.group("opts").split() if "=" in o)
        out.append((text[: m.start()].count("\n") + 2, m.group("lang"), opts.get("file", ""), m.group("body")))
    return out


def page_script(page: Path, workdir: Path) -> Path:
    """Write the page's files and Python scripts into ``workdir``; return the bash script that runs
    the blocks in order."""
    lines = ["set -euo pipefail", SHORT_TRAIN]
    python: list[str] = []

    def flush() -> None:
        if python:
            name = f"_docs_block_{len(lines)}.py"
            (workdir / name).write_text("\n".join(python), encoding="utf-8")
            lines.append(f'python "{name}"')
            python.clear()

    for line, lang, file, body in marked(page):
        if file:
            (workdir / file).write_text(body + "\n", encoding="utf-8")
        elif lang == "python":
            python.append(f"# --- {page.relative_to(DOCS)}, block at line {line} ---\n{body}\n")
        elif lang == "bash":
            flush()
            lines += [f'echo "### {page.relative_to(DOCS)}, block at line {line}" >&2', body]
        else:
            raise AssertionError(f"{page}:{line}: a docs-test {lang} block needs file=NAME")
    flush()
    script = workdir / "_docs_page.sh"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return script


def run_page(page: Path, workdir: Path) -> str | None:
    """Run ``page``'s blocks; None when they all pass, else a report of the failure."""
    workdir.mkdir(parents=True)
    script = page_script(page, workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["bash", str(script)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the page's whole process group (torchrun's ranks too)
        output, _ = proc.communicate()
        return f"{page.relative_to(DOCS)}: still running after {HANG_GUARD_S} s\n{output[-3000:]}"
    if proc.returncode != 0:
        return f"{page.relative_to(DOCS)}: exit status {proc.returncode}\n{output[-4000:]}"
    return None


def test_the_getting_started_page_and_every_guide_have_marked_blocks() -> None:
    for page in [DOCS / "getting_started.md", *sorted((DOCS / "guides").glob("*.md"))]:
        assert marked(page), f"{page.relative_to(DOCS)} has no block marked <!-- docs-test -->"


def test_marked_blocks_run(tmp_path: Path) -> None:
    todo = [p for p in pages() if marked(p)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda p: run_page(p, tmp_path / p.relative_to(DOCS).with_suffix("").as_posix()
                                                   .replace("/", "_")), todo))
    failures = [r for r in reports if r is not None]
    assert not failures, "\n\n".join(failures)
