"""Every registered learner passes the conformance suite (new learners enrol automatically)."""

from __future__ import annotations

import pytest

from localearn import list_algorithms
from localearn.testing import CHECKS


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("algo", list_algorithms())
def test_conformance(algo: str, check: str) -> None:
    CHECKS[check](algo)
