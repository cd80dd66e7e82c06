"""InfoPro: the information-propagation loss of locally supervised learning.

Wang, Ni, Song, Yang & Huang, *Revisiting Locally Supervised Learning: an Alternative to End-to-end
Training*, ICLR 2021 (code: blackfeather-wang/InfoPro-Pytorch). Local module i = 0..K-2 minimises
``λ1(i)·L_rec + λ2(i)·L_task``; the last module the plain cross-entropy of the network's classifier.
``L_rec`` is the binary cross-entropy of a decoder's sigmoid reconstruction of the input image
(:func:`localearn.models.make_decoder`; a linear decoder for vector features) and ``L_task`` the
cross-entropy of an auxiliary head (the paper's "Softmax" variant; InfoPro's ``1c2f`` conv head on
feature maps). The weights are interpolated linearly over the local modules as the released
``train.py`` does: ``λ(i) = λ_first·(1-r) + λ_last·r`` with ``r = i/(K-2)`` (r = 0 when K = 2).
Options ``lambda_rec``/``lambda_rec_last`` are λ1 (the code's ``ixx``) at the first and the last
local module, ``lambda_task``/``lambda_task_last`` λ2 (``ixy``). Defaults: 5 → 0.2 and 0.05 → 0.5,
the released values for InfoPro with the cross-entropy head on ResNet-32 as AugLocal's code runs it
(docs/learners/auglocal.md#reference).

Simplified: the "Contrast" task term (SupCon on a 128-d embedding, which every released CIFAR
command uses) is not implemented; the reconstruction target is each image rescaled per channel to
[0, 1] by its own minimum and maximum, because a learner does not see the dataset's normalisation
constants that the released code de-normalises with (for an image that spans the full intensity
range the two are the same); the decoder for any feature map is the CIFAR decoder (bilinear
upsampling, two 3×3 convs), not the ImageNet one; the released recipe (SGD, Nesterov momentum 0.9,
wd 1e-4, lr 0.8 at batch 1024, cosine, 160 epochs) is the recipe on full CIFAR only, at batch 128
with plain momentum; other image data take the shared Adam at 1e-3.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from localearn.errors import ConfigError
from localearn.layer import Context
from localearn.models.heads import Decoder, make_decoder
from localearn.models.trunk import Trunk
from localearn.recipes import Recipe
from localearn.registry import register_algorithm

from .learner import SupervisedLocal, paper_recipes


def interpolated(first: float, last: float, i: int, modules: int) -> float:
    """``first·(1-r) + last·r`` with ``r = i/(modules-2)`` for local module i (r = 0 for 2 modules)."""
    r = i / (modules - 2) if modules > 2 else 0.0
    return first * (1 - r) + last * r


def reconstruction_target(x: Tensor) -> Tensor:
    """Each sample's channels rescaled to [0, 1] by their own minimum and maximum (see the module
    docstring); a sample that is constant in a channel maps to 0 there."""
    flat = x.flatten(2) if x.dim() >= 3 else x.flatten(1).unsqueeze(1)
    lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x)


@register_algorithm
class InfoPro(SupervisedLocal):
    """InfoPro (see the module docstring)."""

    name = "infopro"
    paper = ("Wang, Ni, Song, Yang & Huang, Revisiting Locally Supervised Learning: an Alternative to "
             "End-to-end Training, ICLR 2021")
    heads: ClassVar[dict[str, str]] = {"map": "conv", "tokens": "mean", "vector": "linear"}
    recipes: ClassVar[dict[str, Recipe]] = paper_recipes(
        "InfoPro CIFAR recipe at batch 128 (STL-10's setting): SGD momentum 0.9, wd 1e-4, lr 0.1, "
        "cosine (docs/learners/infopro.md#reference; Nesterov momentum is plain momentum here)", 1e-4)
    test_arch = "cnn:4-8"

    def __init__(self, *args: Any, lambda_rec: float = 5.0, lambda_rec_last: float = 0.2,
                 lambda_task: float = 0.05, lambda_task_last: float = 0.5, **base: Any) -> None:
        super().__init__(*args, **base)
        self.lambdas = {"lambda_rec": lambda_rec, "lambda_rec_last": lambda_rec_last, "lambda_task": lambda_task,
                        "lambda_task_last": lambda_task_last}
        for key, value in self.lambdas.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")
        if not (lambda_rec or lambda_task) or not (lambda_rec_last or lambda_task_last):
            raise ConfigError("every local module needs a loss: lambda_rec and lambda_task cannot both be 0 "
                              "(nor their _last values)")
        self.build()

    def weights(self, k: int, modules: int) -> tuple[float, float]:
        lam = self.lambdas
        return (interpolated(lam["lambda_task"], lam["lambda_task_last"], k, modules),
                interpolated(lam["lambda_rec"], lam["lambda_rec_last"], k, modules))

    def decoder(self, k: int, trunk: Trunk) -> Decoder | None:
        return make_decoder(trunk.shapes[k], self.input_shape)

    def make_context(self, batch: Any) -> Context:
        """Labels and the reconstruction target (``image``), which travels with the activations."""
        ctx = super().make_context(batch)
        with torch.no_grad():
            ctx.extras["image"] = reconstruction_target(self.split_batch(batch)[0])
        return ctx
