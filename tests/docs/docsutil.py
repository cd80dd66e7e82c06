"""Shared by the docs tests: the repository's paths and the docs tools, imported from docs/tools."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TOOLS = DOCS / "tools"


def tool(name: str) -> ModuleType:
    """A module of docs/tools (they import each other by bare name, so their folder goes first)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)


def pages() -> list[Path]:
    """Every page the site builds (files whose name starts with ``_`` are drafts, not pages)."""
    return [p for p in sorted(DOCS.rglob("*.md")) if not p.name.startswith("_") and "tools" not in p.parts]
