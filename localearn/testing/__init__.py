"""The learner conformance suite, importable by third-party learners.

``localearn.testing.conformance`` holds the checks of the layer contract (no gradient crosses a
layer, determinism, state round trips, declared coupling) and ``localearn.testing.chain_checks``
those of the chain declaration (every derivation, the pipeline's cuts included) and of the step's
host reads. :data:`CHECKS` maps each check's name to it; ``tests/test_conformance.py`` parametrizes
them over :func:`localearn.list_algorithms`, so a new learner is enrolled automatically. Each check
takes a learner *name* and raises ``AssertionError`` with a message that names the learner and the
broken property.
"""

from collections.abc import Callable

from localearn.testing.chain_checks import check_chain_scores, check_chain_training, check_no_host_reads_per_step
from localearn.testing.conformance import (
    check_declared_coupling,
    check_deterministic,
    check_loss_falls,
    check_no_gradient_crosses_layers,
    check_predict_shape,
    check_runs_without_triton,
    check_state_dict_round_trip,
    make_fixture,
    train_all,
)

CHECKS: dict[str, Callable[[str], None]] = {
    "no_gradient_crosses_layers": check_no_gradient_crosses_layers,
    "loss_falls": check_loss_falls,
    "deterministic": check_deterministic,
    "state_dict_round_trip": check_state_dict_round_trip,
    "predict_shape": check_predict_shape,
    "runs_without_triton": check_runs_without_triton,
    "declared_coupling": check_declared_coupling,
    "chain_scores": check_chain_scores,
    "chain_training": check_chain_training,
    "no_host_reads_per_step": check_no_host_reads_per_step,
}

__all__ = [
    "CHECKS",
    "check_chain_scores",
    "check_chain_training",
    "check_declared_coupling",
    "check_deterministic",
    "check_loss_falls",
    "check_no_gradient_crosses_layers",
    "check_no_host_reads_per_step",
    "check_predict_shape",
    "check_runs_without_triton",
    "check_state_dict_round_trip",
    "make_fixture",
    "train_all",
]
