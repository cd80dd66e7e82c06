"""Fixtures of the study tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from studyutil import write_spec


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    """A two-arm digits spec (backprop and Mono-Forward on mlp:1x32, 2 trials, 1 epoch)."""
    return write_spec(tmp_path)
