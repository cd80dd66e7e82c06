"""Lazy heavy imports: ``import localearn`` and the image learners load no graph, CO2e or Triton
package and print nothing (issue #15, item 6)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {"torch_geometric", "codecarbon", "triton"}


def _imported(code: str) -> tuple[set[str], list[str]]:
    """Top-level packages imported by ``code`` in a fresh interpreter, and every other stderr line."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    modules, other = set(), []
    for line in res.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            modules.add(name.split(".")[0])
        elif line.strip():
            other.append(line)
    return modules, other + [ln for ln in res.stdout.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    "code",
    [
        "import localearn",
        "import localearn.algorithms.mono_forward",
        "import localearn.algorithms.forward_forward, localearn.algorithms.backprop",
        "import localearn; localearn.list_algorithms(); localearn.create_learner('mf', arch='mlp:1x8',"
        " input_shape=(1, 8, 8)); localearn.load_dataset('digits')",
    ],
)
def test_no_heavy_imports_and_no_warnings(code: str) -> None:
    modules, printed = _imported(code)
    assert "torch" in modules  # the parse works: torch itself is seen
    assert not (modules & HEAVY), f"{code!r} imported {sorted(modules & HEAVY)}"
    assert printed == [], f"{code!r} printed {printed}"


def test_registry_imports_a_learner_only_when_asked() -> None:
    code = (
        "import sys, localearn; names = localearn.list_algorithms();"
        "assert 'forward_gnn' in names and 'localearn.algorithms.forward_gnn' not in sys.modules;"
        "assert localearn.get_algorithm('fgnn').name == 'forward_gnn';"
        "assert 'localearn.algorithms.forward_gnn' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_table_matches_the_classes() -> None:
    from localearn.algorithms import SHIPPED

    from localearn.registry import get_algorithm

    for name, (module, aliases) in SHIPPED.items():
        cls = get_algorithm(name)
        assert cls.name == name and cls.__module__.startswith(module)
        assert tuple(cls.aliases) == aliases
