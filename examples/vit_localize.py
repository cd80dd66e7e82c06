"""A Vision Transformer trained block by block: torchvision's ``VisionTransformer`` through ``localize``.

``localearn.localize`` cuts any model torch.fx can trace into blocks (here a small ViT on the bundled
8x8 digits: patches of 2, 4 encoder layers of width 64) and trains each block from its own loss:
DGL gives every block but the last an auxiliary head chosen by its features' shape (token
sequences: mean pooling and an MLP), and the ViT's own class-token head trains the last block. The
unmodified model trained end to end by backprop is the baseline. Run: python examples/vit_localize.py
"""

import os

import torch
from torchvision.models import VisionTransformer

import localearn
from localearn.models import adapt_stem

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))
data = localearn.load_dataset("digits")

for algo in ("dgl", "backprop"):
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=8, patch_size=2, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                            num_classes=10)
    adapt_stem(vit, data.input_shape)  # 1 input channel instead of 3
    learner = localearn.localize(vit, algo, input_shape=data.input_shape, blocks=4)
    config = localearn.TrainConfig(epochs=EPOCHS, optimizer="adam", lr=2e-3, progress=False, seed=0)
    m = localearn.Trainer(learner, data, config).fit()["metrics"]
    print(f"{algo}: test accuracy {m['test_accuracy']:.3f}, "
          f"peak saved for backward {m['peak_saved_activation_bytes'] / 2**10:.0f} KiB")
    for name, layer in m["per_layer"].items():  # DGL: each block, the modules it covers, its own accuracy
        print(f"  {name}: {layer.get('modules', 'the whole model')}, test accuracy {layer['test_accuracy']:.3f}")
