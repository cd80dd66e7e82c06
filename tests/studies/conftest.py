"""Fixtures of the study tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from studyutil import kill_started, write_spec


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    """A two-arm digits spec (backprop and Mono-Forward on mlp:1x32, 2 trials, 1 epoch)."""
    return write_spec(tmp_path)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """A study test that fails midway must not leave its `localearn study run` processes behind."""
    yield
    kill_started()
