"""Point the code's citations of background documents at the docs pages that now hold them.

    python docs/tools/rewrite_citations.py              # rewrite in place
    python docs/tools/rewrite_citations.py --check      # list every citation and its target; change nothing
    python docs/tools/rewrite_citations.py --root COPY  # work on a copy of the repository

The code cites ``ALGORITHMS.md``, ``STUDY_PROTOCOL.md``, ``DESIGN.md`` and ``notes/*.md``, which do
not ship. ``docs/_citations.toml`` maps each citation (a document and a locator such as
``§4.5 pitfall 4`` or ``Rule 3``) to a page and anchor under ``docs/``; this script replaces the
citation with that path, e.g. ``ALGORITHMS.md §4.5 pitfall 4`` becomes
``docs/learners/noprop.md#pitfall-inference-noise``. Committed results (``benchmarks/results``)
are records of what ran and are left as they are. Comment and docstring lines that grow past 120
characters are wrapped; other rewritten lines past 120 characters are listed, to wrap by hand.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MAP = Path(__file__).resolve().parents[1] / "_citations.toml"
SOURCES = ("localearn", "algorithms", "kernels", "studies", "benchmarks", "examples", "tests")
SUFFIXES = (".py", ".toml", ".sh", ".md", ".txt", ".cfg")
SKIP = ("benchmarks/results/", "tests/docs/")  # the results, and the tests of this tool (they quote citations)
NOTE = "notes/"
DOC = re.compile(r"(?<![\w/])(?:\.\./shared/|/work/shared/)?"
                 r"(?:(?P<doc>ALGORITHMS|STUDY_PROTOCOL|DESIGN)(?:\.md|(?=\s§))|(?P<note>notes/[a-z_]+\.md))")
SEP = re.compile(r"(?:'s)?(?:[ \t,:(]|\n[ \t]*(?:#[ \t]*)?)*")
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)(?:\s?[-–]\s?(\d+(?:\.\d+)*))?(?: (pitfall|Rule) (\d+))?(?![\d])")
PURE = re.compile(r"§[\d.\-]+(?: (?:pitfall|Rule) \d+)?")  # a section key, looked up by parsing
BARE = re.compile(r"(?<![\w./#])" + SECTION.pattern)


@dataclass
class Citation:
    """One citation found in a file, and where it now points."""

    path: str
    line: int
    text: str  # the citation as written
    key: str  # the map entry that resolved it ("" : the document as a whole)
    target: str  # the replacement: docs/<page>#<anchor>


def load_map(path: Path = MAP) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _section_keys(m: re.Match[str]) -> list[str]:
    """Map keys to try for a parsed section, most specific first."""
    sec, upto, kind, n = m.groups()
    keys = [f"§{sec}-{upto}"] if upto else []
    if kind:
        keys += [f"§{sec} {kind} {n}"] + ([f"Rule {n}"] if kind == "Rule" else [])
    parts = sec.split(".")
    return keys + [f"§{'.'.join(parts[:i])}" for i in range(len(parts), 0, -1)]


def resolve(table: dict[str, str], text: str) -> tuple[str, int]:
    """The map key for the locator at the start of ``text`` and the locator's length ("", 0: none)."""
    for key in sorted((k for k in table if k and not PURE.fullmatch(k)), key=len, reverse=True):
        if text.startswith(key):
            return key, len(key)
    m = SECTION.match(text)
    if m:
        key = next((k for k in _section_keys(m) if k in table), "")
        if key:
            return key, m.end()
    return "", 0


def rewrite_text(text: str, rel: str, cmap: dict[str, Any]) -> tuple[str, list[Citation]]:
    """``text`` with every citation replaced, and the citations found (``rel``: the file's path)."""
    found: list[Citation] = []
    for phrase, replacement in cmap.get("phrases", {}).items():
        if phrase in text:
            found.append(Citation(rel, text[: text.index(phrase)].count("\n") + 1, phrase, phrase, replacement))
            text = text.replace(phrase, replacement)
    out, pos = [], 0
    for m in DOC.finditer(text):
        if m.start() < pos:
            continue
        doc = m.group("doc") or m.group("note")
        table = cmap[doc if m.group("doc") else NOTE + doc.split("/", 1)[1]]
        sep = SEP.match(text, m.end())  # always matches (every part is optional)
        sep_end, sep_text = (sep.end(), sep.group()) if sep else (m.end(), "")
        key, length = resolve(table, text[sep_end:])
        end = sep_end + length if length else m.end()
        if length and "(" in sep_text and text[end:end + 1] == ")":
            end += 1  # "DESIGN.md (Kernels)": the parenthesis goes with the locator
        target = "docs/" + table[key]
        found.append(Citation(rel, text[: m.start()].count("\n") + 1, text[m.start():end], key, target))
        out += [text[pos:m.start()], target]
        pos = end
    text = "".join([*out, text[pos:]])
    bare = max((p for p in cmap.get("bare", {}) if rel.startswith(p)), key=len, default=None)
    if bare is not None:
        table = cmap[cmap["bare"][bare]]

        def sub(m: re.Match[str]) -> str:
            key = next((k for k in _section_keys(m) if k in table), "")
            target = "docs/" + table[key]
            found.append(Citation(rel, text[: m.start()].count("\n") + 1, m.group(), key, target))
            return target

        text = BARE.sub(sub, text)
    return text, found


def _docstring_lines(text: str) -> set[int]:
    """1-based numbers of the lines inside docstrings (module, class and function)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            lines.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return lines


def wrap_long_lines(new: str, old: str, width: int = 120) -> str:
    """Wrap the rewritten Python lines that grew past ``width``: comment lines and docstring lines
    are split at a space, the rest keeps the line's indentation (and its ``# ``). Lines of code
    are left alone (the caller lists them)."""
    before, inside, out = set(old.splitlines()), _docstring_lines(new), []
    for number, line in enumerate(new.splitlines(keepends=True), 1):
        body = line.rstrip("\n")
        comment = re.match(r"[ \t]*#[ \t]?", body)
        lead = comment.group() if comment else body[: len(body) - len(body.lstrip())]
        while len(body) > width and body not in before and (comment or number in inside):
            cut = body.rfind(" ", len(lead) + 1, width + 1)
            if cut <= len(lead):
                break
            out.append(body[:cut].rstrip() + "\n")
            body = lead + body[cut + 1:]
        out.append(body + line[len(line.rstrip("\n")):])
    return "".join(out)


def source_files(root: Path) -> list[Path]:
    files = [p for d in SOURCES if (root / d).is_dir() for p in sorted((root / d).rglob("*"))]
    return [p for p in files if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
            and not any(p.relative_to(root).as_posix().startswith(s) for s in SKIP)]


def run(root: Path = ROOT, write: bool = True, cmap: dict[str, Any] | None = None
        ) -> tuple[list[Citation], list[str]]:
    """Rewrite (or, with ``write`` False, only scan) every source file under ``root``; returns the
    citations and the rewritten Python lines now longer than 120 characters."""
    cmap = cmap or load_map()
    citations: list[Citation] = []
    long_lines: list[str] = []
    for path in source_files(root):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        new, found = rewrite_text(text, rel, cmap)
        citations += found
        if new != text:
            if path.suffix == ".py":
                new = wrap_long_lines(new, text)
                long_lines += [f"{rel}:{i}" for i, line in enumerate(new.splitlines(), 1)
                               if len(line) > 120 and line not in text.splitlines()]
            if write:
                path.write_text(new, encoding="utf-8")
    return citations, long_lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (or a copy of it) to rewrite")
    p.add_argument("--check", action="store_true", help="list the citations and their targets; change nothing")
    args = p.parse_args(argv)
    citations, long_lines = run(args.root, write=not args.check)
    for c in citations:
        print(f"{c.path}:{c.line}: {c.text!r} -> {c.target}")
    vague = [c for c in citations if c.key == "" and c.text.strip().endswith(("§", ")"))]
    print(f"{len(citations)} citations in {len({c.path for c in citations})} files"
          + ("" if args.check else " rewritten"))
    for line in long_lines:
        print(f"longer than 120 characters now: {line}")
    return 1 if vague else 0


if __name__ == "__main__":
    sys.exit(main())
