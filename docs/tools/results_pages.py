"""Write the committed results into the docs and the README, between marker comments.

    python docs/tools/results_pages.py          # rewrite every marked section from the JSON
    python docs/tools/results_pages.py --check  # exit 1 naming each section that differs

A page asks for a section with a pair of comments; everything between them is generated::

    <!-- results:begin learner:mono_forward -->   records of one learner (its page)
    <!-- results:begin topic:kernels -->           records of one topic (kernels, distributed, ...)
    <!-- results:begin all -->                     every record, grouped by date (the results page)
    <!-- results:begin summary -->                 one headline row per learner (README, learner index)
    <!-- results:begin statement:precision -->     one measured sentence (README: precision, pipeline)
    ...
    <!-- results:end KEY -->

The numbers come from ``results_readers.load_records`` (``benchmarks/results/**.json``); nothing
between the markers is typed by hand, so ``tests/docs/test_results_pages.py`` can regenerate the
pages in a temporary copy and fail when a number on a page differs from its JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_measures import statement
from results_readers import ROOT, Record, load_records

MARKED = re.compile(r"(<!-- results:begin (\S+) -->\n)(.*?)(<!-- results:end \2 -->)", re.S)
#: learner -> the page that documents it (several learners share a page).
PAGES = {"mono_forward": "mono_forward", "forward_forward": "forward_forward", "cafo": "cafo",
         "noprop": "noprop", "noprop_ct": "noprop", "noprop_fm": "noprop", "counter_current": "counter_current",
         "forward_gnn": "forward_gnn", "backprop_gnn": "forward_gnn", "backprop": "backprop", "dgl": "dgl",
         "infopro": "infopro", "auglocal": "auglocal"}
#: the summary's rows: learner -> which committed run is its headline (a path fragment).
HEADLINES = {"mono_forward": "defaults_mnist", "forward_forward": "defaults_mnist_2026-12-01/forward_forward",
             "cafo": "defaults_mnist", "noprop": "defaults_mnist", "counter_current": "defaults_mnist",
             "backprop": "defaults_mnist", "forward_gnn": "studies/forward-gnn-cora-links",
             "dgl": "any_network", "infopro": "any_network", "auglocal": "any_network"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(records: list[Record], with_topics: bool = False) -> str:
    head = "| date | setting | result | command |" + (" about |" if with_topics else "")
    rule = "|---|---|---|---|" + ("---|" if with_topics else "")
    rows = [head, rule]
    for r in sorted(records, key=lambda r: (r.date, r.source), reverse=True):
        result = "; ".join(r.results) + (f" ({r.note})" if r.note else "")
        row = (f"| {r.date} | {_cell(r.setting)}<br>`{r.source}` | {_cell(result)} | `{_cell(r.command)}` |"
               + (f" {', '.join(r.topics)} |" if with_topics else ""))
        rows.append(row)
    return "\n".join(rows) + "\n"


def _link(learner: str, target: str) -> str:
    """The learner page's link as seen from ``target`` (a path relative to the root)."""
    page = Path("docs/learners") / f"{PAGES[learner]}.md"
    return Path(os.path.relpath(page, Path(target).parent)).as_posix()


def summary(records: list[Record], target: str) -> str:
    rows = ["| learner | headline result | setting | command |", "|---|---|---|---|"]
    for learner, fragment in HEADLINES.items():
        found = [r for r in records if fragment in r.source and learner in r.topics]
        if not found:
            continue
        r = max(found, key=lambda r: r.date)
        result = "; ".join(r.results[:2]) if "studies" in r.topics else r.results[0]
        rows.append(f"| [{learner}]({_link(learner, target)}) | {_cell(result)} | {_cell(r.setting)} ({r.date}) "
                    f"| `{_cell(r.command)}` |")
    return "\n".join(rows) + "\n"


def render(key: str, records: list[Record], skipped: list[str], target: str, root: Path = ROOT) -> str:
    """The generated text of section ``key`` for the file ``target``."""
    kind, _, name = key.partition(":")
    if kind in ("learner", "topic"):  # a learner's page also shows the learners it documents (NoProp-CT/FM)
        names = {n for n, page in PAGES.items() if page == name} | {name} if kind == "learner" else {name}
        chosen = [r for r in records if names & set(r.topics)]
        if not chosen:
            return "No committed result yet.\n"
        return _table(chosen)
    if kind == "all":
        out = []
        for date in sorted({r.date for r in records}, reverse=True):
            out += [f"### {date}\n", _table([r for r in records if r.date == date], with_topics=True)]
        out += ["Not shown:\n", *[f"- {s}" for s in skipped], ""] if skipped else []
        return "\n".join(out)
    if kind == "summary":
        return summary(records, target)
    if kind == "statement":
        return statement(name, root)
    raise ValueError(f"{target}: unknown results section {key!r}")


def targets(root: Path) -> list[Path]:
    """Every file that may hold marked sections: the docs pages and the README."""
    return [p for p in [*sorted((root / "docs").rglob("*.md")), root / "README.md"] if p.is_file()]


def regenerate(root: Path = ROOT, results_root: Path | None = None, write: bool = True) -> list[str]:
    """Regenerate every marked section under ``root`` from ``results_root``'s JSON; returns the
    ``file: section`` names that changed (written unless ``write`` is False)."""
    records, skipped = load_records(results_root or root)
    changed = []
    for path in targets(root):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()

        def fill(m: re.Match[str], rel: str = rel) -> str:
            return m.group(1) + render(m.group(2), records, skipped, rel, results_root or root) + m.group(4)

        new = MARKED.sub(fill, text)
        if new != text:
            old = {m.group(2): m.group(3) for m in MARKED.finditer(text)}
            changed += [f"{rel}: {k}" for k, v in ((m.group(2), m.group(3)) for m in MARKED.finditer(new))
                        if old.get(k) != v]
            if write:
                path.write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a section differs")
    args = p.parse_args(argv)
    changed = regenerate(write=not args.check)
    for name in changed:
        print(("differs from its JSON: " if args.check else "rewrote: ") + name)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
