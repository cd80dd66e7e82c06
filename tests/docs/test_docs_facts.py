"""Tables in the docs that restate the code stay true to it: learner options, search spaces and
the command line's flags."""

from __future__ import annotations

import argparse
import re

from docsutil import DOCS, tool

from localearn import list_algorithms
from localearn.cli_args import build_parser
from localearn.registry import get_algorithm
from localearn.space import SEARCH_SPACE
from localearn.utils import keyword_defaults

pages = tool("results_pages")
RANGE = re.compile(r"(\w+) \[([-\d.e]+), ([-\d.e]+)\]")


def _section(page: str, anchor: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index("{#" + anchor + "}")
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def test_every_learner_option_is_on_its_page() -> None:
    for name in list_algorithms():
        page = f"learners/{pages.PAGES[name]}.md"
        table = _section(page, "options")
        # the class, not its __init__: a constructor's **base is followed up to LocalLearner's options
        options = keyword_defaults(get_algorithm(name), skip=("input_shape", "num_classes"))
        assert options, f"{name}: no constructor options found"
        missing = sorted(o for o in set(options) - {"schedule"} if f"`{o}`" not in table)
        assert not missing, f"{page}#options lacks {name}'s options {missing}"


def test_the_search_space_table_matches_the_code() -> None:
    rows = {}
    for line in _section("guides/studies.md", "search-spaces").splitlines():
        if line.startswith("| `"):
            names, space = line.split("|")[1:3]
            for learner in re.findall(r"`(\w+)`", names):
                rows[learner] = {p: (float(lo), float(hi)) for p, lo, hi in RANGE.findall(space)}
    for name in list_algorithms():
        dists = {**SEARCH_SPACE, **get_algorithm(name).search}  # what search_space(trial) samples
        code = {p: (d.low, d.high) for p, d in dists.items()}
        assert rows.get(name) == code, f"guides/studies.md#search-spaces: {name} says {rows.get(name)}, the code {code}"


def _train_flags() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [s for a in sub.choices["train"]._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def test_every_train_flag_is_in_the_cli_guide() -> None:
    text = (DOCS / "guides" / "cli.md").read_text()
    synopsis = text[: text.index("\n## ")]
    synopsis += synopsis.replace("--[no-]", "--") + synopsis.replace("--[no-]", "--no-")  # both spellings
    table = _section("guides/cli.md", "train")
    for flag in _train_flags():
        assert re.search(rf"{re.escape(flag)}(?![\w-])", synopsis), f"guides/cli.md: the synopsis lacks {flag}"
        assert re.search(rf"`{re.escape(flag)}[` ]", table), f"guides/cli.md#train: no row names {flag}"
