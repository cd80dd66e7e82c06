"""NoProp-DT: each block learns to denoise a noisy label embedding, with no forward or backward
pass through the other blocks.

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322. ``create_learner`` with learner options, then the Trainer.
Run: python examples/noprop.py
"""

import os

import torch

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "6"))

torch.manual_seed(0)
data = localearn.load_dataset("digits")
learner = localearn.create_learner(
    "noprop", arch="cnn:16-32", input_shape=data.input_shape, num_classes=data.num_classes,
    T=5, width=64, hidden=32, inference="mean", blocks_per_step="all",
)
config = localearn.TrainConfig(epochs=EPOCHS, batch_size=64, seed=0)
result = localearn.Trainer(learner, data, config).fit()
print(f"noprop ({len(learner.layers)} denoising blocks): test accuracy {result['metrics']['test_accuracy']:.3f}")
