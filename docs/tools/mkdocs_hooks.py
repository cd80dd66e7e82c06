"""MkDocs hooks: give mkdocstrings one source tree shaped like the installed package.

pyproject.toml maps ``localearn.algorithms``, ``localearn.kernels`` and ``localearn.studies`` to
the top-level folders ``algorithms/``, ``kernels/`` and ``studies/`` (setuptools ``package-dir``).
Griffe, which mkdocstrings uses to read the docstrings, looks for a subpackage inside its parent's
folder, so from a checkout (or an editable install) it cannot find ``localearn.algorithms``. Before
the build, this hook assembles ``build/api_src/localearn`` from symlinks, following the
``package-dir`` table, and ``mkdocs.yml`` points the handler's ``paths`` at ``build/api_src``.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "build" / "api_src"


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """``package-dir`` from pyproject.toml: dotted package name -> its folder in the checkout."""
    table = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = table["tool"]["setuptools"]["package-dir"]
    return {name: (root / folder).resolve() for name, folder in mapping.items()}


def build_tree(root: Path = ROOT, tree: Path = TREE) -> Path:
    """(Re)build ``tree``: each mapped package becomes a folder of symlinks to its files, nested
    where its dotted name says. Returns ``tree``."""
    if tree.exists():
        shutil.rmtree(tree)
    mapping = package_dirs(root)
    for name in sorted(mapping, key=lambda n: n.count(".")):  # parents before children
        target = tree.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for child in mapping[name].iterdir():
            if child.name == "__pycache__" or (target / child.name).exists():
                continue
            (target / child.name).symlink_to(child, target_is_directory=child.is_dir())
    return tree


@event_priority(100)  # before mkdocstrings reads its handler's paths
def on_config(config: Any) -> Any:
    build_tree()
    return config
