"""Mono-Forward layers inside your own model, trained by your own loop.

Gong, Li & Abdulla, *Mono-Forward*, arXiv 2501.09238. Each `MonoForwardLayer` owns its optimizer;
`layer.train_step(x, ctx)` detaches its input, so the loop below never backpropagates across
layers. Run: python examples/mono_forward_custom.py
"""

from __future__ import annotations

import os

import torch
from localearn.algorithms.mono_forward import MonoForwardLayer
from torch import nn

from localearn import Context, load_dataset
from localearn.arch import kaiming_linear


class TwoLayerMF(nn.Module):
    def __init__(self, in_dim: int, width: int, num_classes: int) -> None:
        super().__init__()
        body1 = nn.Sequential(nn.Flatten(), kaiming_linear(in_dim, width), nn.ReLU())
        self.l1 = MonoForwardLayer(body1, width, num_classes)
        self.l2 = MonoForwardLayer(nn.Sequential(kaiming_linear(width, width), nn.ReLU()), width, num_classes)
        for layer in (self.l1, self.l2):
            layer.optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)

    def train_batch(self, x: torch.Tensor, y: torch.Tensor) -> float:
        ctx = Context(y=y, num_classes=10)
        h, loss1 = self.l1.train_step(x, ctx)
        _, loss2 = self.l2.train_step(h, ctx)
        return float(loss1 + loss2) / 2

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2.goodness(self.l2(self.l1(x)))


if __name__ == "__main__":
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = TwoLayerMF(64, 256, data.num_classes)
    for epoch in range(int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "15"))):
        gen = torch.Generator().manual_seed(epoch)
        losses = [model.train_batch(x, y) for x, y in data.train_batches(64, gen)]
        x, y = data.split("test")
        acc = (model.predict(x).argmax(1) == y).float().mean()
        print(f"epoch {epoch + 1:2d}  loss {sum(losses) / len(losses):.4f}  test accuracy {acc:.4f}")
