"""The shipped learners, one module or subpackage each; importing this package registers them all."""

from localearn.algorithms import (
    backprop,
    cafo,
    counter_current,
    forward_forward,
    forward_gnn,
    mono_forward,
    noprop,
)

__all__ = ["backprop", "cafo", "counter_current", "forward_forward", "forward_gnn", "mono_forward", "noprop"]
