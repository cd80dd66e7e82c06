"""The learner conformance suite, importable by third-party learners.

``localearn.testing.conformance`` holds checks that every registered learner must pass
(``tests/test_conformance.py`` parametrizes them over :func:`localearn.list_algorithms`, so a new
learner is enrolled automatically). Each check takes a learner *name* and raises
``AssertionError`` with a message that names the learner and the broken property.
"""

from localearn.testing.conformance import (
    CHECKS,
    check_declared_coupling,
    check_deterministic,
    check_loss_falls,
    check_no_gradient_crosses_layers,
    check_predict_shape,
    check_runs_without_triton,
    check_state_dict_round_trip,
    make_fixture,
)

__all__ = [
    "CHECKS",
    "check_declared_coupling",
    "check_deterministic",
    "check_loss_falls",
    "check_no_gradient_crosses_layers",
    "check_predict_shape",
    "check_runs_without_triton",
    "check_state_dict_round_trip",
    "make_fixture",
]
