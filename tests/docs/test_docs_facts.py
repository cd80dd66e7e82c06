"""Tables in the docs that restate the code stay true to it: learner options and search spaces."""

from __future__ import annotations

import re

import optuna
from docsutil import DOCS, tool

from localearn import list_algorithms
from localearn.registry import get_algorithm
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
        options = set(keyword_defaults(get_algorithm(name).__init__, skip=("input_shape", "num_classes")) or {})
        missing = sorted(o for o in options - {"schedule"} if f"`{o}`" not in table)
        assert not missing, f"{page}#options lacks {name}'s options {missing}"


def test_the_search_space_table_matches_the_code() -> None:
    rows = {}
    for line in _section("guides/studies.md", "search-spaces").splitlines():
        if line.startswith("| `"):
            names, space = line.split("|")[1:3]
            for learner in re.findall(r"`(\w+)`", names):
                rows[learner] = {p: (float(lo), float(hi)) for p, lo, hi in RANGE.findall(space)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in list_algorithms():
        trial = optuna.create_study().ask()
        get_algorithm(name).search_space(trial)
        code = {p: (d.low, d.high) for p, d in trial.distributions.items()}  # type: ignore[attr-defined]
        assert rows.get(name) == code, f"guides/studies.md#search-spaces: {name} says {rows.get(name)}, the code {code}"
