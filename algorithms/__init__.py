"""The shipped learners, one module or subpackage each, imported only when first used.

``SHIPPED`` maps every learner name to the module that registers it and to its aliases, so that
``localearn.registry`` can list them all and import one on demand: a user of an image learner
never imports torch_geometric (ForwardGNN's dependency). A new learner adds its line here.
"""

SHIPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "auglocal": ("localearn.algorithms.supervised_local", ()),
    "backprop": ("localearn.algorithms.backprop", ("bp",)),
    "backprop_gnn": ("localearn.algorithms.forward_gnn", ("bp_gnn",)),
    "cafo": ("localearn.algorithms.cafo", ("cascaded_forward",)),
    "counter_current": ("localearn.algorithms.counter_current", ("ccl",)),
    "dgl": ("localearn.algorithms.supervised_local", ("decoupled_greedy",)),
    "forward_forward": ("localearn.algorithms.forward_forward", ("ff",)),
    "forward_gnn": ("localearn.algorithms.forward_gnn", ("fgnn",)),
    "infopro": ("localearn.algorithms.supervised_local", ()),
    "mono_forward": ("localearn.algorithms.mono_forward", ("mf",)),
    "noprop": ("localearn.algorithms.noprop", ("noprop_dt",)),
    "noprop_ct": ("localearn.algorithms.noprop", ()),
    "noprop_fm": ("localearn.algorithms.noprop", ()),
}

__all__ = ["SHIPPED"]
