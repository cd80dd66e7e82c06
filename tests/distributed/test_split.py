"""Pipeline groups: contiguous, balanced by parameter count, or given explicitly."""

from __future__ import annotations

import pytest

from localearn.distributed.split import split_layers
from localearn.errors import ConfigError


def test_balanced_split_minimises_the_largest_group() -> None:
    assert split_layers([785, 1001, 1001, 1001], 2) == [range(0, 2), range(2, 4)]
    assert split_layers([1, 1, 1, 100], 2) == [range(0, 3), range(3, 4)]
    assert split_layers([10, 10, 10, 10], 4) == [range(i, i + 1) for i in range(4)]


def test_explicit_split_and_its_errors() -> None:
    assert split_layers([1, 1, 1], 2, "1,2") == [range(0, 1), range(1, 3)]
    for bad in ("2,2", "3", "a,b", "0,3"):
        with pytest.raises(ConfigError, match="split"):
            split_layers([1, 1, 1], 2, bad)
    with pytest.raises(ConfigError, match="only 2 layers \\(chain positions\\)"):
        split_layers([1, 1], 3)
