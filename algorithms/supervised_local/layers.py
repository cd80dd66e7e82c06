"""One module of supervised local learning: a block, its auxiliary network and (InfoPro) a decoder.

Belilovsky, Eickenberg & Oyallon, *Decoupled Greedy Learning of CNNs*, ICML 2020 (the block and
auxiliary-head skeleton); Wang, Ni, Song, Yang & Huang, *Revisiting Locally Supervised Learning: an
Alternative to End-to-end Training*, ICLR 2021 (the reconstruction term). Module k's loss is
``task_weight · CE(aux_k(h_k), y) + rec_weight · BCE(decoder_k(h_k), image)`` on its own output
``h_k``; ``LocalLayer.train_step`` detaches the input, so nothing crosses to the module before.
A block that ends in the model's own classifier has no auxiliary network: its output is the scores.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from localearn.layer import Context, LocalLayer
from localearn.models.heads import Decoder


class SupervisedBlock(LocalLayer):
    """Block ``body`` with its auxiliary network ``aux`` (None: the body's output is the class scores)
    and an optional reconstruction ``decoder``, weighted as in the module docstring.

    Attributes:
        block_info: what run.json says about the block (the model's modules it covers, its output shape).
    """

    def __init__(self, body: nn.Module, aux: nn.Module | None, decoder: Decoder | None = None,
                 task_weight: float = 1.0, rec_weight: float = 0.0) -> None:
        super().__init__()
        self.body, self.aux, self.decoder = body, aux, decoder
        self.task_weight, self.rec_weight = float(task_weight), float(rec_weight)
        self.block_info: dict[str, Any] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def scores(self, h: Tensor, ctx: Context) -> Tensor:
        return h if self.aux is None else self.aux(h)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        loss = self.task_weight * F.cross_entropy(self.scores(h, ctx), ctx.y) if self.task_weight else None
        if self.decoder is not None and self.rec_weight:
            rec = self.rec_weight * F.binary_cross_entropy_with_logits(self.decoder.logits(h), ctx["image"])
            loss = rec if loss is None else loss + rec
        assert loss is not None, "a module with neither a task nor a reconstruction weight has no loss"
        return loss
