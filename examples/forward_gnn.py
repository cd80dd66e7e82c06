"""ForwardGNN on your own PyG graph: each graph layer learns from its own forward-only loss.

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024 (arXiv 2403.11004). Here the
graph is PyG's KarateClub with a split of our own; any ``torch_geometric.data.Data`` with
``train_mask``, ``val_mask`` and ``test_mask`` goes to the Trainer as it is.
Run: python examples/forward_gnn.py
"""

import os

import torch
from torch_geometric.datasets import KarateClub

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "40"))

torch.manual_seed(0)
graph = KarateClub()[0]  # 34 nodes, 4 communities, shipped inside torch_geometric
order = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(0))
for name, part in zip(("train_mask", "val_mask", "test_mask"), (order[:18], order[18:26], order[26:]), strict=True):
    mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
    mask[part] = True
    graph[name] = mask

learner = localearn.create_learner("forward_gnn", arch="gcn:32x2", input_shape=(graph.num_features,), num_classes=4)
config = localearn.TrainConfig(epochs=EPOCHS, patience=EPOCHS, seed=0)
result = localearn.Trainer(learner, graph, config).fit()  # a PyG Data works like a bundled dataset
print(f"forward_gnn on KarateClub: test accuracy {result['metrics']['test_accuracy']:.3f} (chance 0.25)")
