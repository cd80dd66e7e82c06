"""The shipped learners, one module each; importing this package registers them all."""

from localearn.algorithms import backprop, mono_forward

__all__ = ["backprop", "mono_forward"]
