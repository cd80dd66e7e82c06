"""Forward-Forward's layers: :class:`FFLayer` (RMS-normalised linear + ReLU, trained on the FF
logistic loss of its goodness through the fused ``localearn.kernels.ff_layer`` op) and the
one-pass readout :class:`FFClassifier`.

Hinton, *The Forward-Forward Algorithm: Some Preliminary Investigations*, arXiv 2212.13345
(docs/learners/forward_forward.md); the collaborative γ of Lorberbom et al., arXiv 2305.12393
(docs/learners/forward_forward.md#collaborative-ff).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.layer import Context, LocalLayer

from . import ops


class FFLayer(LocalLayer):
    """``h = ReLU(W·rms(x) + b)`` trained by the FF loss on its goodness (+ peer normalisation).

    Its fused op is ``localearn.kernels.ff_layer`` (positive and negative rows in one matmul, the
    weight gradient in the same pass); the trainer's ``kernels``/``compile`` options choose its
    implementation and ``kernel_used`` records what the last step ran.
    """

    running_mean: Tensor
    fused_op = "ff_layer"

    def __init__(self, in_dim: int, out_dim: int, *, goodness: str, theta: float,
                 straight_through: bool, peer_norm: float, peer_momentum: float,
                 body: nn.Module | None = None) -> None:
        super().__init__()
        if body is None:  # else a user block (from_modules) in place of the linear map
            body = nn.Linear(in_dim, out_dim)
            nn.init.normal_(body.weight, 0.0, 1.0 / math.sqrt(out_dim))  # N(0, 1/D_out), loeweX
            nn.init.zeros_(body.bias)
        self.linear = body
        self.goodness_mode, self.theta = goodness, float(theta)
        self.straight_through = straight_through
        self.peer_norm, self.peer_momentum = float(peer_norm), float(peer_momentum)
        self.register_buffer("running_mean", torch.full((out_dim,), 0.5))  # EMA init 0.5
        self.collab, self.index = "none", 0  # set by the learner (collaborative FF)

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(self.linear(ops.rms_normalise(x)), self.straight_through)

    def logit(self, h: Tensor) -> Tensor:
        """``G − θ`` of each row (no gradient): this layer's vote in collaborative FF."""
        return (ops.goodness(h.detach(), self.goodness_mode) - self.theta).detach()

    def gamma(self, ctx: Context) -> Tensor | None:
        """Collaborative FF's γ_l for this layer from the step's context: the other layers' votes
        (``all``: from the extra pass in ``make_context``), the preceding layers' votes
        (``preceding``: accumulated along the chain) or None."""
        if self.collab == "all":
            return ctx["total"] - ctx["logits"][self.index]
        return ctx.get("acc") if self.collab == "preceding" else None

    def vote(self, h: Tensor, ctx: Context) -> None:
        """``preceding``: add this layer's ``G − θ`` to the chain's running vote."""
        if self.collab == "preceding":
            acc = ctx.get("acc")
            ctx.extras["acc"] = self.logit(h) if acc is None else acc + self.logit(h)

    def infer(self, x: Tensor, ctx: Context) -> Tensor:
        """The forward map in the chain (frozen or training): sets this layer's γ in the context
        for :meth:`local_loss`, then casts its own vote for the layers after it."""
        h = self(x)
        ctx.extras["gamma"] = self.gamma(ctx)
        self.vote(h, ctx)
        return h

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        """The unfused loss, for a user block (``from_modules``) that is not an ``nn.Linear``."""
        pos = ctx["is_positive"]
        loss = ops.ff_loss(ops.goodness(h, self.goodness_mode), pos, self.theta, ctx.get("gamma"))
        if self.peer_norm > 0:
            pn, r = ops.peer_norm_loss(h[pos], self.running_mean, self.peer_momentum)
            self.running_mean.copy_(r)
            loss = loss + self.peer_norm * pn
        return loss

    def fused_weight(self) -> Tensor | None:
        return self.linear.weight if isinstance(self.linear, nn.Linear) else None  # a user block: unfused

    def fused_forward_loss(self, op: Callable[..., Any], x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Forward + FF loss (+ peer norm, whose running mean is updated here) in one op; γ is set
        and this layer's vote cast around it exactly as :meth:`infer` does in the chain. The
        goodness and the loss are reduced in fp32 whatever the autocast precision."""
        ctx.extras["gamma"] = self.gamma(ctx)
        linear = cast(nn.Linear, self.linear)
        h, loss, r = op(x, linear.weight, linear.bias, ctx["is_positive"], self.theta, goodness=self.goodness_mode,
                        straight_through=self.straight_through, gamma=ctx.get("gamma"), peer_norm=self.peer_norm,
                        running_mean=self.running_mean, peer_momentum=self.peer_momentum)
        self.vote(h, ctx)
        if r is not None:
            self.running_mean.copy_(r)
        return h, loss


class FFClassifier(LocalLayer):
    """The one-pass readout: a linear softmax classifier on detached features (zero-initialised)."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.zeros_(self.linear.weight)  # loeweX
        self.layer_name = "classifier"

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        return F.cross_entropy(h, ctx.y)
