"""Forward-Forward over your own blocks: each block is trained to give high goodness to real
(image, label) pairs and low goodness to wrong ones.

Hinton, *The Forward-Forward Algorithm*, arXiv 2212.13345. FF normalises each block's input and
applies its own (straight-through) ReLU after it, so the blocks here are plain linear maps; the
label is written into the first pixels of the flattened input. Run: python examples/forward_forward.py
"""

import os

import torch
from localearn.algorithms.forward_forward import ForwardForward
from torch import nn

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))

torch.manual_seed(0)
data = localearn.load_dataset("digits")
blocks = [nn.Sequential(nn.Flatten(), nn.Linear(64, 128)), nn.Linear(128, 128)]
learner = ForwardForward.from_modules(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
config = localearn.TrainConfig(epochs=EPOCHS, lr=0.01, seed=0)  # SGD; 0.01 suits this small net
result = localearn.Trainer(learner, data, config).fit()
print(f"forward_forward: test accuracy {result['metrics']['test_accuracy']:.3f}")
