"""CaFo's two kinds of layer: a conv block (random or DFA-trained) and a linear predictor.

See :mod:`localearn.algorithms.cafo` for the algorithm. A :class:`CafoBlock` is one trunk block;
when the blocks are DFA-trained, blocks 1..K-1 carry their fixed feedback matrix ``B_k`` and
block K carries the auxiliary head. A :class:`CafoPredictor` is ``s_k = flatten(h_k) W_k`` (no
bias, as official) trained by one of four losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer

from .sparsemax import sparsemax_loss

GRADIENT_LOSSES = ("ce", "sparsemax")  # trained by the trainer's optimizer (Adam by default)
CLOSED_LOSSES = ("mse", "ce_fullbatch")  # updated in closed form from per-epoch sums
PREDICTOR_LOSSES = GRADIENT_LOSSES + CLOSED_LOSSES


class CafoBlock(LocalLayer):
    """One block ``h_k = BN(MaxPool(ReLU(Conv(h_{k-1}))))``; its DFA extras, if any.

    Attributes:
        body: the trunk block from :func:`localearn.arch.build_trunk`.
        head: the auxiliary ``Linear(d_K, C)`` on the flattened output (last block, DFA only; over a
            model's blocks a head by feature shape), else None.
        feedback: buffer ``B_k`` (C × d_k), Gaussian with unit-norm rows (blocks < K, DFA only).
    """

    feedback: Tensor | None

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head: nn.Module | None = None
        self.register_buffer("feedback", None)  # set to B_k for DFA blocks < K
        self.block_info: dict[str, Any] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def aux_scores(self, h: Tensor) -> Tensor:
        """The auxiliary head's scores of this block's output ``h``."""
        assert self.head is not None
        return self.head(h.flatten(1)) if isinstance(self.head, nn.Linear) else self.head(h)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        """Block K: the auxiliary head's CE. Block k < K: the DFA surrogate ``Σ h ⊙ (e B_k)``,
        whose gradient with respect to ``h`` is exactly the feedback ``e B_k`` (``e`` from
        ``ctx["dfa_error"]``), so ``LocalLayer.train_step`` applies ``h_k.backward(e B_k)``."""
        if self.head is None:
            if self.feedback is None:
                raise NotImplementedError(f"{self.layer_name} is a random block; it is never trained")
            return (h * (ctx["dfa_error"] @ self.feedback).view_as(h)).sum()
        assert ctx.y is not None
        return F.cross_entropy(self.aux_scores(h), ctx.y)


@torch.no_grad()
def dfa_error(blocks: list[CafoBlock], x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``e = (softmax(o) − Y) / B`` from one pass through ``blocks`` and the last one's head.

    BatchNorm runs in the blocks' current (training) mode, as in the blocks' own forward that
    follows; this pass's running-statistics updates are undone, so they move once per step.
    """
    buffers = [b for blk in blocks for name, b in blk.named_buffers() if name != "feedback"]
    kept = [b.clone() for b in buffers]
    h = x
    for block in blocks:
        h = block(h)
    logits = blocks[-1].aux_scores(h)
    for b, old in zip(buffers, kept, strict=True):
        b.copy_(old)
    onehot = F.one_hot(y, num_classes).to(logits.dtype)
    return (torch.softmax(logits, 1) - onehot) / y.shape[0]


class CafoPredictor(LocalLayer):
    """``s_k = flatten(h_k) W_k`` with W_k ∈ R^{d_k×C}, stored as a bias-free ``nn.Linear``; or, with
    ``head``, ``s_k = head(h_k)`` (a head by feature shape, or a model's own head; gradient losses only).

    ``ce`` and ``sparsemax`` train by :meth:`LocalLayer.train_step` with the layer's optimizer.
    ``mse`` and ``ce_fullbatch`` have no optimizer: :meth:`accumulate` sums ``HᵀH, HᵀY`` (resp.
    the full-batch CE gradient) over a training pass in float64, and :meth:`finalize` (called
    before the next evaluation) solves ``W = (HᵀH + λI)⁻¹HᵀY`` once (resp. takes one step
    ``W ← W − η[(1/N)Hᵀ(softmax(HW) − Y) + λW]`` from W_0 = all ones, as official).

    Args:
        in_dim: d_k.
        num_classes: C.
        loss: one of :data:`PREDICTOR_LOSSES`.
        lam: λ (ridge for ``mse``, L2 for ``ce_fullbatch``).
        fullbatch_lr: η of ``ce_fullbatch``.
    """

    solved: Tensor

    def __init__(
        self, in_dim: int, num_classes: int, loss: str, lam: float = 0.0, fullbatch_lr: float = 0.01,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.loss_name, self.lam, self.fullbatch_lr = loss, float(lam), float(fullbatch_lr)
        self.num_classes = num_classes
        self.flat = head is None
        if not self.flat and loss in CLOSED_LOSSES:
            raise ConfigError(f"predictor_loss={loss} solves a linear predictor on flattened features; "
                              "with other heads use predictor_loss=ce or sparsemax")
        # default U(±1/√d) for Adam
        self.linear: nn.Module = nn.Linear(in_dim, num_classes, bias=False) if head is None else head
        if loss in CLOSED_LOSSES:
            self.weight.requires_grad_(False)
            with torch.no_grad():
                self.weight.fill_(1.0 if loss == "ce_fullbatch" else 0.0)
        self.register_buffer("solved", torch.zeros((), dtype=torch.bool))  # mse: done for good
        self._solved = False  # its host copy, so a step never reads the buffer back from the device
        self._reset_sums()
        self.last_loss = torch.tensor(float("nan"))

    def _reset_sums(self) -> None:
        self._n = 0
        self._a: Tensor | None = None  # HᵀH (mse) or Hᵀ(P − Y) (ce_fullbatch), float64
        self._b: Tensor | None = None  # HᵀY (mse)

    fused_op = "linear_cross_entropy"  # the projection-head op, for the ce loss on flattened features

    @property
    def weight(self) -> Tensor:
        """W_k of the linear predictor (flattened features: closed-form losses, the fused op)."""
        return cast(nn.Linear, self.linear).weight

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h.flatten(1) if self.flat else h)

    def fused_weight(self) -> Tensor | None:
        # a pooling head (any network's feature maps, token sequences) is not one linear map
        return self.weight if self.loss_name == "ce" and self.flat else None

    def fused_forward_loss(self, op: Callable[..., Any], x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """``CE(flatten(h_k) W_k)`` through the projection-head op (the fused kernel on a GPU never
        keeps the logits for backward); the returned scores are computed without a graph."""
        flat = x.flatten(1)
        loss = op(flat, self.weight, ctx.y)
        with torch.no_grad():
            return self.linear(flat), loss

    def local_loss(self, s: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        if self.loss_name == "sparsemax":
            return sparsemax_loss(s, ctx.y)
        return F.cross_entropy(s, ctx.y)

    @property
    def pending(self) -> bool:
        """Sums from a training pass wait to be turned into a weight update."""
        return self._n > 0

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if prefix + "solved" in state_dict:  # once per load, not per step
            self._solved = bool(state_dict[prefix + "solved"])

    def fit_batch(self, h: Tensor, ctx: Context) -> Tensor:
        """One training batch on block features ``h``: a gradient step (ce, sparsemax) through
        ``LocalLayer.train_step``, or the closed-form losses' sums; nothing once solved. Returns
        the batch loss as a device tensor."""
        if self._solved:  # closed-form MSE is solved once; later epochs have nothing to do
            return self.last_loss
        if self.loss_name in GRADIENT_LOSSES:
            self.last_loss = self.train_step(h, ctx)[1]
            return self.last_loss
        assert ctx.y is not None
        return self.accumulate(h, ctx.y)

    @torch.no_grad()
    def accumulate(self, h: Tensor, y: Tensor) -> Tensor:
        """Add one batch to the pass's sums; returns the batch loss at the current W."""
        hh = h.flatten(1).double()
        yy = F.one_hot(y, self.num_classes).double()
        s = hh @ self.weight.double().t()
        if self.loss_name == "mse":
            a, b = hh.t() @ hh, hh.t() @ yy
            loss = 0.5 * ((s - yy) ** 2).sum(1).mean()
        else:
            a, b = hh.t() @ (torch.softmax(s, 1) - yy), None
            loss = F.cross_entropy(s, y)
        self._a = a if self._a is None else self._a + a
        if b is not None:
            self._b = b if self._b is None else self._b + b
        self._n += int(y.shape[0])
        self.last_loss = loss.detach().float()
        return self.last_loss

    @torch.no_grad()
    def finalize(self) -> None:
        """Turn the pass's sums into W (mse: once, for good; ce_fullbatch: one GD step)."""
        if not self.pending:
            return
        assert self._a is not None
        w = self.weight
        if self.loss_name == "mse":
            assert self._b is not None
            x = solve_ridge(self._a, self._b, self.lam, self._n)
            w.copy_(x.t().to(w.dtype))
            self.solved.fill_(True)
            self._solved = True
        else:
            grad = self._a.t() / self._n + self.lam * w.double()
            w.copy_((w.double() - self.fullbatch_lr * grad).to(w.dtype))
        self._reset_sums()


def solve_ridge(hth: Tensor, hty: Tensor, lam: float, n: int) -> Tensor:
    """``X = (HᵀH + λI)⁻¹ HᵀY``, falling back to the pseudo-inverse like the official code.

    The direct solve is tried only when the system can be regular (λ > 0 or N ≥ d) and kept only
    if it succeeded, is finite and has a small residual; otherwise ``pinv(HᵀH + λI) HᵀY``, which
    for λ = 0 is the minimum-norm least-squares solution ``H⁺Y`` (what ``numpy.linalg.lstsq``
    returns).
    """
    d = hth.shape[0]
    a = hth + lam * torch.eye(d, dtype=hth.dtype, device=hth.device) if lam > 0 else hth
    if lam > 0 or n >= d:
        x, info = torch.linalg.solve_ex(a, hty)
        if int(info) == 0 and torch.isfinite(x).all():
            resid = torch.linalg.norm(a @ x - hty) / torch.linalg.norm(hty).clamp_min(1e-300)
            if float(resid) < 1e-6:
                return x
    return torch.linalg.pinv(a, hermitian=True) @ hty


def check(ok: bool, message: str) -> None:
    """Raise the one-line ConfigError ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def unit_norm_gaussian(rows: int, cols: int, seed: int | None) -> Tensor:
    """A fixed DFA feedback matrix: N(0, 1) entries, each row scaled to unit L2 norm."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    b = torch.randn(rows, cols, generator=gen)
    return b / b.norm(dim=1, keepdim=True)
