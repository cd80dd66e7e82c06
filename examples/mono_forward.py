"""Mono-Forward over your own blocks: ``from_modules``, no subclass, no arch string.

Gong, Li & Abdulla, *Mono-Forward*, arXiv 2501.09238. Each block becomes one local layer with its
own projection to class scores; the Trainer trains them greedily (block 1 to its best epoch, then
block 2 on the frozen block 1). Run: python examples/mono_forward.py
"""

import os

import torch
from localearn.algorithms.mono_forward import MonoForward
from torch import nn

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))

torch.manual_seed(0)
data = localearn.load_dataset("digits")  # scikit-learn's 8x8 digits, bundled, offline
blocks = [
    nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU()),
    nn.Sequential(nn.Linear(256, 256), nn.ReLU()),
]
learner = MonoForward.from_modules(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
result = localearn.Trainer(learner, data, localearn.TrainConfig(epochs=EPOCHS, seed=0)).fit()
print(f"mono_forward ({result['arch']}): test accuracy {result['metrics']['test_accuracy']:.3f}")
