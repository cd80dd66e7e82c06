"""The package's import graph has no cycle, and imports hidden inside functions stay few (issue #22).

Module-level imports of the project's own modules (``localearn``, ``localearn.algorithms``,
``localearn.kernels``, ``localearn.studies``, relative imports) form a directed graph that must be
acyclic, so every module can be imported on its own and the layering is visible. An import inside a
function is allowed only for optional heavy dependencies and lazy learner loading; at most
:data:`MAX_HIDDEN` of them may name the project's own modules. Imports under ``if TYPE_CHECKING:``
are type-only and not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"localearn": "localearn", "localearn.algorithms": "algorithms", "localearn.kernels": "kernels",
            "localearn.studies": "studies"}
MAX_HIDDEN = 20


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, through pyproject's package-dir mapping."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not name.startswith("localearn.algorithms") or package == "localearn.algorithms":
                out.setdefault(name, path)
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import, names: set[str]) -> list[str]:
    """The project modules an import statement names (a package's ``from . import x`` included)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:  # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on pkg itself
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*parts, *([base] if base else [])])
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
    found = []
    for target in targets:
        while target and target not in names:
            target = target.rpartition(".")[0]
        if target:
            found.append(target)
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _scan() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level edges, and the in-function imports of project modules (``file:line``)."""
    modules = _modules()
    names = set(modules)
    edges: dict[str, set[str]] = {name: set() for name in names}
    hidden: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"

        def visit(nodes: list[ast.stmt], in_function: bool, module: str = name, pkg: bool = is_package,
                  file: Path = path) -> None:
            for node in nodes:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    targets = [t for t in _resolve(module, pkg, node, names) if t != module]
                    if in_function and targets:
                        hidden.append(f"{file.relative_to(ROOT)}:{node.lineno}")
                    elif not in_function:
                        edges[module].update(targets)
                elif isinstance(node, ast.If) and _type_checking(node):
                    continue
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(node.body, True)
                else:
                    for field in ("body", "orelse", "finalbody", "handlers"):
                        inner = getattr(node, field, None)
                        if isinstance(inner, list):
                            visit([n for n in inner if isinstance(n, ast.stmt)] +
                                  [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body],
                                  in_function)

        visit(tree.body, False)
    return edges, hidden


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    edges, _ = _scan()
    assert len(edges) > 50  # the scan sees the package
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_few_imports_hide_inside_functions() -> None:
    _, hidden = _scan()
    assert len(hidden) <= MAX_HIDDEN, f"{len(hidden)} in-function imports of the project's modules:\n" + \
        "\n".join(hidden)


@pytest.mark.parametrize("cycle", [{"a": {"b"}, "b": {"a"}}, {"a": {"b"}, "b": {"c"}, "c": {"a"}}])
def test_the_cycle_finder_finds_cycles(cycle: dict[str, set[str]]) -> None:
    assert _cycle(cycle) is not None and _cycle({"a": {"b"}, "b": set()}) is None
