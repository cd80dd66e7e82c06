"""NoProp-CT and NoProp-FM: one time-conditioned denoiser, local in time only (not block-local).

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322 (docs/learners/noprop.md#ct-fm).

Both learners train a single network on one random time t ~ U(0, 1) per sample and step; there
are no blocks, so the whole network (with Linear_out, W_Embed and, for CT, the schedule network)
is one :class:`LocalLayer` with one optimizer, and ``block_local = False``.

Network (no BatchNorm, as the paper's CT figure): image path = the ``cnn:`` conv stack (conv3×3 →
ReLU → maxpool2 → dropout) → FC(width) → ReLU; z path = FC(width) → ReLU; time path = 64-dim
sinusoidal embedding → FC(width) → ReLU; fusion = concat → FC(width) → ReLU → FC(hidden) → ReLU
→ FC(out). CT's output is class logits ℓ (û = softmax(ℓ) W_Embed); FM's output is a velocity in
R^d.

**NoProp-CT.** Learned schedule ᾱ(t) = sigmoid(−γ(t)), SNR(t) = exp(−γ(t)),
γ(t) = γ₀ + (γ₁ − γ₀)(1 − γ̄(t)) with γ₀ = −7, γ₁ = 7 (so ᾱ(0) ≈ 9e−4, ᾱ(1) ≈ 0.999, matching
DT's range; an assumption) and γ̄ a monotone network (softplus-positive weights, VDM style)
normalised to γ̄(0) = 0, γ̄(1) = 1. Loss: CE(Linear_out(z_1), y) on a q-sample z_1 + ½ᾱ(0)‖u_y‖²
(learned embeddings) + (η/2) w(t) ‖û − u_y‖², γ′ by autograd (η = 1 by default, as the paper's
CT table). Inference integrates the deterministic (DDIM-type) flow
dz/dt = (d√ᾱ/dt) û + (d√(1−ᾱ)/dt) ε̂, ε̂ = (z − √ᾱ û)/√(1−ᾱ), from z_0 ~ N(0, I) at t = 0 to
t = 1 in ``steps`` Euler or Heun steps, then classifies z_1. The paper does not state which
sampler CT uses; this ODE is our choice.

**Deviation: the L2 weight w(t).** The paper's weight is w = SNR′(t) (``weighting="snr"``), i.e.
the L2 term is (η/2)∫‖û − u_y‖² dSNR. With SNR running from e^−7 to e^7, 99.9 % of that measure
lies at SNR > 1, where z_t alone names the label; per-sample weights span six decades (0.013 at
t = 0, ≈ 15 000 at t = 1). One network with one Adam then learns to copy z_t, hardly to read x:
on digits the denoiser's accuracy at t ≤ 0.25 was still 0.1-0.3 after 600 steps, and inference,
which starts from pure noise, scored 0.1-0.4. NoProp-DT does not suffer because each block has
its own optimizer, which absorbs its block's constant weight. The default ``weighting="logsnr"``
measures the same error in log-SNR instead: w = d log SNR/dt = −γ′(t), so the term is
(η/2)∫‖û − u_y‖² d log SNR and every noise level weighs the same, as DT's per-block optimizers
effectively make it. Like the paper's term it depends on the learned γ̄ only through the network's
t-input (the endpoints are fixed), so γ̄ keeps its role.

**NoProp-FM.** z_t = t u_y + (1 − t) z_0, z_0 ~ N(0, I); v̂(z_t, x, t) regresses u_y − z_0.
The head is trained with CE(Linear_out(z̃_1), y) on the network's endpoint estimate
z̃_1 = z_t + (1 − t) v̂, which is also the extra classification term learned embeddings need;
we add it for every embedding so that the head is trained (a choice; docs/learners/noprop.md#ct-fm only
requires it for learned embeddings). Inference integrates dz/dt = v̂ from t = 0 to 1.

**Both: Linear_out starts at zero** (the paper does not give its initialisation). With PyTorch's
default random init, Adam at lr 1e-3 needed hundreds of steps before the 10×10 head even mapped a
clean u_y to y (42-60 % after 240 steps on digits), which capped argmax Linear_out(z_1) there
however good z_1 was (0.60 for a CT denoiser 0.97 right). At zero the head starts neutral and its
first CE steps already order every class.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform

from .common import MonotoneGamma, check_choice, class_medoids, conv_stack, make_embedding, sinusoidal

SOLVERS = ("euler", "heun")
WEIGHTINGS = ("logsnr", "snr")
GAMMA_0, GAMMA_1 = -7.0, 7.0


class TimeConditionedNet(LocalLayer):
    """The single CT/FM network plus Linear_out, W_Embed and (CT) the schedule; one optimizer."""

    embed: Tensor
    ready: Tensor

    def __init__(self, variant: str, input_shape: tuple[int, ...], channels: tuple[int, ...], embed: Tensor,
                 trainable: bool, num_classes: int, width: int, hidden: int, dropout: float, eta: float,
                 weighting: str = "logsnr", time_dim: int = 64) -> None:
        super().__init__()
        self.variant, self.eta, self.weighting, self.time_dim = variant, eta, weighting, time_dim
        self.conv, feat = conv_stack(input_shape, channels, dropout)
        d = embed.shape[1]
        self.img = nn.Sequential(nn.Flatten(), nn.Linear(feat, width), nn.ReLU())
        self.z_in = nn.Sequential(nn.Linear(d, width), nn.ReLU())
        self.t_in = nn.Sequential(nn.Linear(time_dim, width), nn.ReLU())
        out = num_classes if variant == "ct" else d
        self.fuse = nn.Sequential(nn.Linear(3 * width, width), nn.ReLU(), nn.Linear(width, hidden),
                                  nn.ReLU(), nn.Linear(hidden, out))
        self.trainable = trainable
        if trainable:
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)
        self.register_buffer("ready", torch.tensor(not bool((embed == 0).all())))
        self.out = nn.Linear(d, num_classes)
        # Neutral start: a random head needs hundreds of steps to map u_y to y (module docstring).
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.gamma_bar = MonotoneGamma() if variant == "ct" else None

    def forward(self, x: Tensor, z: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """CT: logits ℓ(x, z_t, t); FM: velocity v̂(x, z_t, t)."""
        if z is None or t is None:
            raise ValueError("the NoProp-CT/FM network takes (x, z_t, t)")
        feats = [self.img(self.conv(x)), self.z_in(z), self.t_in(sinusoidal(t, self.time_dim))]
        return self.fuse(torch.cat(feats, dim=1))

    def gamma(self, t: Tensor) -> Tensor:
        assert self.gamma_bar is not None
        return GAMMA_0 + (GAMMA_1 - GAMMA_0) * (1 - self.gamma_bar(t))

    def gamma_and_slope(self, t: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        """γ(t) and dγ/dt (autograd through the monotone network)."""
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            g = self.gamma(t)
            (dg,) = torch.autograd.grad(g.sum(), t, create_graph=create_graph)
        return g, dg

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        # Overridden because the network takes (x, z_t, t), all drawn here from one batch.
        assert ctx.y is not None
        u = self.embed[ctx.y]
        # Low-discrepancy times (VDM): t_i = (t₀ + i/B) mod 1 is still U(0, 1) per sample but covers
        # [0, 1] evenly, which tames the variance of the time-weighted terms.
        n = len(u)
        t = (torch.rand((), device=u.device) + torch.arange(n, device=u.device) / n).remainder(1.0).to(u.dtype)
        eps = torch.randn_like(u)
        if self.variant == "fm":
            z_t = t[:, None] * u + (1 - t[:, None]) * eps
            v = self(x, z_t, t)
            z1 = z_t + (1 - t[:, None]) * v
            loss = (v - (u - eps)).pow(2).sum(1).mean() + F.cross_entropy(self.out(z1), ctx.y)
            return v, loss
        g, dg = self.gamma_and_slope(t, create_graph=True)
        bar = torch.sigmoid(-g)[:, None]
        z_t = bar.sqrt() * u + (1 - bar).sqrt() * eps
        logits = self(x, z_t, t)
        u_hat = F.softmax(logits.float(), dim=1) @ self.embed.float()  # fp32 under autocast: weighted L2
        # −γ′ = d log SNR/dt ≥ 0; the paper's SNR′ = −γ′ exp(−γ) (see the module docstring).
        weight = -dg * torch.exp(-g) if self.weighting == "snr" else -dg
        l2 = 0.5 * self.eta * (weight * (u_hat - u).pow(2).sum(1)).mean()
        ends = torch.sigmoid(-self.gamma(torch.tensor([0.0, 1.0], device=u.device, dtype=u.dtype)))
        z1 = ends[1].sqrt() * u + (1 - ends[1]).sqrt() * torch.randn_like(u)
        loss = F.cross_entropy(self.out(z1), ctx.y) + l2
        if self.trainable:
            loss = loss + 0.5 * ends[0] * u.pow(2).sum(1).mean()
        return logits, loss

    def velocity(self, x: Tensor, z: Tensor, t: float) -> Tensor:
        """dz/dt of the inference flow at scalar time t."""
        tt = torch.full((len(z),), t, device=z.device, dtype=z.dtype)
        if self.variant == "fm":
            return self(x, z, tt)
        g, dg = self.gamma_and_slope(tt[:1], create_graph=False)
        bar = torch.sigmoid(-g)
        dbar = -bar * (1 - bar) * dg
        s, sig = bar.sqrt(), (1 - bar).sqrt()
        u_hat = F.softmax(self(x, z, tt), dim=1) @ self.embed
        eps_hat = (z - s * u_hat) / sig
        return dbar / (2 * s) * u_hat - dbar / (2 * sig) * eps_hat


class _ContinuousNoProp(LocalLearner):
    """Shared constructor, training step and ODE solver of NoProp-CT and NoProp-FM."""

    variant: ClassVar[str] = ""
    block_local = False
    coupling = "one time-conditioned network: local in time only, not across blocks"
    pipeline_refusal = "one time-conditioned network is shared by every step: there are no layer groups to place"
    schedules = ("joint",)
    default_arch = "cnn:32-64-128"
    test_arch = "cnn:8-16"
    test_options: ClassVar[dict[str, Any]] = {"width": 128, "hidden": 128, "steps": 4}
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "adam", "lr": 1e-3, "weight_decay": 1e-3}
    # The paper's CT row (docs/learners/noprop.md#reference); FM has no row of its own and shares it.
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("docs/learners/noprop.md#reference (NoProp-CT, MNIST: batch 128, 100 epochs, Adam lr 1e-3 "
                         "wd 1e-3)",
                         batch_size=128, epochs=100, optimizer="adam", lr=1e-3, weight_decay=1e-3),
        "cifar10": recipe("docs/learners/noprop.md#reference (NoProp-CT, CIFAR-10: 500 epochs)", epochs=500),
        "cifar100": recipe("docs/learners/noprop.md#reference (NoProp-CT, CIFAR-100: 1000 epochs)", epochs=1000),
    }
    default_eta: ClassVar[float] = 1.0
    # lr and wd over three decades around the paper's CT table (Adam 1e-3, wd 1e-3).
    search: ClassVar[dict[str, Dist]] = {"weight_decay": log_uniform(1e-5, 1e-2)}

    def __init__(
        self,
        *args: Any,
        embedding: str = "onehot",
        embed_dim: int = 20,
        steps: int = 1000,
        solver: str = "euler",
        eta: float | None = None,
        weighting: str = "logsnr",
        width: int = 256,
        hidden: int = 128,
        dropout: float = 0.2,
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
        if self.arch.kind != "cnn":
            raise ConfigError(f"{self.name} takes a cnn:C1-C2-... spec (image path channels), got {self.arch}")
        self.solver = check_choice("solver", solver, SOLVERS)
        weighting = check_choice("weighting", weighting, WEIGHTINGS)
        if self.variant == "fm" and weighting != "logsnr":
            raise ConfigError("weighting (the CT L2 weight) does not apply to noprop_fm, which has no SNR")
        if int(steps) < 1:
            raise ConfigError(f"steps (ODE solver steps) must be a positive integer, got {steps}")
        self.steps = int(steps)
        eta = self.default_eta if eta is None else float(eta)
        if not (eta > 0 and math.isfinite(eta)):
            raise ConfigError(f"eta must be a positive number, got {eta}")
        for key, value in (("width", width), ("hidden", hidden)):
            if int(value) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value}")
        self.embedding_kind = embedding
        emb, trainable = make_embedding(embedding, self.num_classes, embed_dim, self.input_shape)
        self._ready = embedding != "prototype"
        self.add_layer(TimeConditionedNet(self.variant, self.input_shape, self.arch.widths, emb, trainable,
                                          self.num_classes, int(width), int(hidden), float(dropout), eta,
                                          weighting))

    @property
    def net(self) -> TimeConditionedNet:
        net = self.layers[0]
        assert isinstance(net, TimeConditionedNet)
        return net

    def make_context(self, batch: Any) -> Context:
        """Labels; the prototype embeddings from the first training batch (see common.py)."""
        if self.embedding_kind == "prototype" and not self._ready:
            x, y = self.split_batch(batch)
            with torch.no_grad():
                self.net.embed.copy_(class_medoids(x, y, self.num_classes))
                self.net.ready.fill_(True)
            self._ready = True  # a host copy: no step reads the buffer back
        return super().make_context(batch)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._ready = bool(self.net.ready)  # once per load

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Integrate from z_0 ~ N(0, I) at t = 0 to t = 1, then Linear_out(z_1)."""
        net, x = self.net, h
        z = torch.randn(x.shape[0], net.embed.shape[1], device=x.device)
        step = 1.0 / self.steps
        for n in range(self.steps):
            t = n * step
            k1 = net.velocity(x, z, t)
            if self.solver == "heun":
                k2 = net.velocity(x, z + step * k1, t + step)
                z = z + 0.5 * step * (k1 + k2)
            else:
                z = z + step * k1
        return z, net.out(z)


@register_algorithm
class NoPropCT(_ContinuousNoProp):
    """NoProp-CT, continuous time with a learned schedule; local in time only.

    Args: see :class:`_ContinuousNoProp`: ``embedding`` (onehot | learned | prototype),
    ``embed_dim``, ``steps`` (1000), ``solver`` (euler | heun), ``eta`` (1.0), ``weighting``
    (logsnr | snr: the L2 weight −γ′(t) or the paper's SNR′(t)), ``width``, ``hidden``,
    ``dropout``.
    """

    name = "noprop_ct"
    paper = "Li, Teh & Pascanu, NoProp, arXiv 2503.24322 (NoProp-CT; local in time only)"
    variant = "ct"


@register_algorithm
class NoPropFM(_ContinuousNoProp):
    """NoProp-FM, flow matching of label embeddings; local in time only (options as NoProp-CT)."""

    name = "noprop_fm"
    paper = "Li, Teh & Pascanu, NoProp, arXiv 2503.24322 (NoProp-FM; local in time only)"
    variant = "fm"
