"""Every citation of a background document in the code has a page in this repository.

``docs/_citations.toml`` maps the code's citations of ALGORITHMS.md, STUDY_PROTOCOL.md, DESIGN.md
and notes/*.md (none of which ships) to docs pages and anchors; ``docs/tools/rewrite_citations.py``
rewrites the code to point there. These tests check the map against the code and the pages, and
run the rewrite on a copy of the repository (the real one is rewritten once, by hand).
"""

from __future__ import annotations

import ast
import re
import shutil
import tomllib
from pathlib import Path

from docsutil import DOCS, REPO, pages, tool

rewrite = tool("rewrite_citations")
ANCHOR = re.compile(r"\{#([\w-]+)\}|<a id=\"([\w-]+)\"></a>")
OLD = re.compile(r"(ALGORITHMS|STUDY_PROTOCOL|DESIGN)\.md|notes/[a-z_]+\.md")


def _anchors(page: Path) -> set[str]:
    return {a or b for a, b in ANCHOR.findall(page.read_text())}


def test_every_target_is_a_page_with_that_anchor() -> None:
    cmap = rewrite.load_map()
    built = {p.relative_to(DOCS).as_posix() for p in pages()}
    targets = [t for doc, table in cmap.items() if doc not in ("bare", "phrases") for t in table.values()]
    targets += [t.removeprefix("docs/") for t in cmap["phrases"].values() if t.startswith("docs/")]
    for target in targets:
        page, _, anchor = target.partition("#")
        assert page in built, f"{target}: no such docs page"
        assert not anchor or anchor in _anchors(DOCS / page), f"{target}: the page has no anchor #{anchor}"
    assert set(cmap["bare"].values()) <= set(cmap), "a [bare] entry names a document without a table"


def test_every_citation_in_the_code_resolves_precisely() -> None:
    citations, _ = rewrite.run(REPO, write=False)
    vague = [c for c in citations if c.key == "" and not rewrite.DOC.fullmatch(c.text.strip())]
    assert not vague, f"citations with a locator the map does not know (add them to docs/_citations.toml): {vague}"


def test_the_rewrite_on_a_copy(tmp_path: Path) -> None:
    for folder in rewrite.SOURCES:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    citations, long_lines = rewrite.run(tmp_path)
    assert all("docs/" in c.target for c in citations)
    for path in rewrite.source_files(tmp_path):
        text = path.read_text()
        left = OLD.search(text)
        assert left is None, f"{path.relative_to(tmp_path)} still cites {left and left.group()}"
        if path.suffix == ".py":
            ast.parse(text, str(path))  # still Python
        elif path.suffix == ".toml":
            tomllib.loads(text)
    dt = (tmp_path / "algorithms" / "noprop" / "dt.py").read_text()
    assert "docs/learners/noprop.md#pitfall-inference-noise" in dt
    mf = (tmp_path / "algorithms" / "mono_forward.py").read_text()
    assert 'recipe("docs/reference/setups.md#hyperparameters (MF, MNIST, original)", lr=1.570e-3)' in mf
    for line in long_lines:  # what is left to wrap by hand is code, never a comment or docstring
        rel, number = line.rsplit(":", 1)
        assert not (tmp_path / rel).read_text().splitlines()[int(number) - 1].lstrip().startswith("#"), line
    again, _ = rewrite.run(tmp_path)
    assert again == [], "a second rewrite still finds citations"


def test_nothing_in_the_docs_points_outside_the_repository() -> None:
    for page in DOCS.rglob("*.md"):
        text = page.read_text()
        assert "../shared" not in text and "/work/" not in text, f"{page} points outside the repository"
        found = OLD.search(text)
        assert not found, f"{page} cites {found and found.group()}, which does not ship"


def test_root_pages_link_inside_the_repository() -> None:
    """README.md and CONTRIBUTING.md: every relative link resolves on GitHub (the file, and the
    heading anchor on a docs page), and nothing points outside the repository."""
    link = re.compile(r"\]\(([^)#\s]+)(?:#([\w-]+))?\)")
    for name in ("README.md", "CONTRIBUTING.md"):
        text = (REPO / name).read_text()
        assert "../shared" not in text and "/work/" not in text and not OLD.search(text), name
        for target, anchor in link.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            assert (REPO / target).exists(), f"{name}: {target} does not exist"
            if anchor and target.startswith("docs/") and target.endswith(".md"):
                assert anchor in _anchors(REPO / target), f"{name}: {target} has no anchor #{anchor}"


def test_readme_keeps_the_two_commands_and_its_length() -> None:
    """CI runs the README's test command verbatim; the front door stays short."""
    text = (REPO / "README.md").read_text()
    assert "pip install . && localearn train --algo mono_forward\n" in text
    assert 'pip install -e ".[dev]" && python -m pytest -m "not slow"\n' in text
    assert len(text.splitlines()) <= 150


CITED = re.compile(r"docs/([\w/]+\.md)(?:#([\w-]+))?(?: \(\"([^\"]+)\"\))?")


def test_every_docs_path_the_code_cites_exists() -> None:
    """``docs/<page>.md``, ``docs/<page>.md#anchor`` and ``docs/<page>.md ("Section title")`` in the
    code point at a page that is built, an anchor it has, a heading it has."""
    built = {p.relative_to(DOCS).as_posix() for p in pages()}
    for path in rewrite.source_files(REPO):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("tests/docs/"):
            continue
        for page, anchor, title in CITED.findall(path.read_text(encoding="utf-8", errors="replace")):
            assert page in built, f"{rel} cites docs/{page}, which is not a page of the site"
            text = (DOCS / page).read_text()
            assert not anchor or anchor in _anchors(DOCS / page), f"{rel}: docs/{page} has no anchor #{anchor}"
            assert not title or re.search(rf"^#+ {re.escape(title)}\b", text, re.M), \
                f"{rel}: docs/{page} has no section {title!r}"
