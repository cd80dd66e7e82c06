"""The shipped learners, one module each; importing this package registers them all."""

from localearn.algorithms import backprop, forward_gnn, mono_forward, noprop

__all__ = ["backprop", "forward_gnn", "mono_forward", "noprop"]
