"""Counter-Current Learning fed by your own torch DataLoaders.

Kao & Hariharan, *Counter-Current Learning: A Biologically Plausible Dual Network Approach for
Deep Learning*, NeurIPS 2024 (arXiv 2409.19841). A forward network and a feedback network train
each other layer by layer. The Trainer takes ``(train, val, test)`` loaders beside the bundled
datasets (``localearn.from_loaders`` is the explicit form). Run: python examples/counter_current.py
"""

import os

import torch
from torch.utils.data import DataLoader, TensorDataset

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))

torch.manual_seed(0)
digits = localearn.load_dataset("digits")  # any (x, y) tensors of yours would do


def loader(split: str, shuffle: bool = False) -> DataLoader:
    x, y = digits.split(split)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=shuffle)


data = localearn.from_loaders(loader("train", shuffle=True), loader("val"), loader("test"), num_classes=10)
learner = localearn.create_learner("ccl", arch="mlp:64-2x256", input_shape=data.input_shape, num_classes=10)
result = localearn.Trainer(learner, data, localearn.TrainConfig(epochs=EPOCHS, seed=0)).fit()
print(f"counter_current on DataLoaders: test accuracy {result['metrics']['test_accuracy']:.3f}")
