"""ForwardGNN: forward (layer-local) learning of graph neural networks.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(docs/learners/forward_gnn.md). Modules: :mod:`.layers` (the graph layer and its local losses),
:mod:`.variants` (virtual nodes, appended labels), :mod:`.learner` (``forward_gnn``, node
classification), :mod:`.link` (link prediction, its own small loop) and :mod:`.backprop_gnn`
(``backprop_gnn``, the PyG backprop baselines).
"""

from localearn.algorithms.forward_gnn.backprop_gnn import BackpropGNN
from localearn.algorithms.forward_gnn.learner import ForwardGNN

__all__ = ["BackpropGNN", "ForwardGNN"]
