"""Pieces shared by the NoProp learners: the image conv stack, class embeddings and the output head.

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322 (docs/learners/noprop.md).

Class embeddings W_Embed ∈ R^{C×d} (row y is u_y):

* ``onehot``: d = C, the identity, fixed (a buffer, no KL term).
* ``learned``: d = ``embed_dim`` (20 in the paper), orthogonal initialisation, trained.
* ``prototype``: d = the image size; row y is initialised from class y's medoid image (the sample
  with the smallest summed Euclidean distance to the other samples of its class). The learner sees
  only batches, so the medoids are taken from the **first training batch** (a documented
  deviation: the paper uses the whole training set); a class absent from that batch starts from
  N(0, I). The rows are trained afterwards, like learned embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer

EMBEDDINGS = ("onehot", "learned", "prototype")


def conv_stack(input_shape: tuple[int, ...], channels: tuple[int, ...], dropout: float) -> tuple[nn.Sequential, int]:
    """The paper's image path body: per entry conv3×3 (pad 1) → ReLU → maxpool 2 → dropout.

    Returns:
        The module and its flattened output width.

    Raises:
        ConfigError: when the input is not an image or too small for the pooling.
    """
    if len(input_shape) != 3:
        raise ConfigError(f"NoProp needs image input (C, H, W), got shape {tuple(input_shape)}")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for ch in channels:
        if h < 2 or w < 2:
            raise ConfigError(f"cnn spec with {len(channels)} blocks pools {tuple(input_shape)} below 1×1")
        layers += [nn.Conv2d(c, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout)]
        c, h, w = ch, h // 2, w // 2
    return nn.Sequential(*layers), c * h * w


def check_choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    """``value`` if it is one of ``valid``, else a ConfigError naming the option and the choices."""
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def make_embedding(kind: str, num_classes: int, embed_dim: int, input_shape: tuple[int, ...]) -> tuple[Tensor, bool]:
    """Initial W_Embed for ``kind`` and whether it is trained."""
    check_choice("embedding", kind, EMBEDDINGS)
    if kind == "onehot":
        return torch.eye(num_classes), False
    if kind == "learned":
        if int(embed_dim) < 1:
            raise ConfigError(f"embed_dim must be a positive integer, got {embed_dim}")
        w = torch.empty(num_classes, int(embed_dim))
        nn.init.orthogonal_(w)
        return w, True
    return torch.zeros(num_classes, math.prod(input_shape)), True  # filled by init_prototypes


def class_medoids(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Row c = the medoid of class c's rows of ``x`` (flattened); N(0, I) for absent classes."""
    flat = x.flatten(1)
    out = torch.randn(num_classes, flat.shape[1], dtype=flat.dtype, device=flat.device)
    for c in range(num_classes):
        members = flat[y == c]
        if len(members):
            out[c] = members[torch.cdist(members, members).sum(1).argmin()]
    return out


class NoPropHead(LocalLayer):
    """The shared output head Linear_out and the class embeddings W_Embed, as their own layer.

    Its local step minimises exactly the part of L_t that touches θ_out and W_Embed:
    ``CE(Linear_out(z_T), y)`` on a fresh q-sample ``z_T = √ᾱ_T u_y + √(1−ᾱ_T) ε`` (the step's
    input is ε), plus, when W_Embed is trained, the KL term ½ᾱ_0‖u_y‖² and the blocks' L2 terms
    ``w_t ‖softmax(sg ℓ_t) W_Embed − u_y‖²`` with the block logits ℓ_t detached (passed in
    ``ctx["block_terms"]``). Its gradients on θ_out and W_Embed are therefore those of L_t, while
    a block's own step never touches them (the block sees sg W_Embed): each optimizer steps on
    its own parameters only.
    """

    embed: Tensor
    ready: Tensor

    def __init__(self, embedding: Tensor, trainable: bool, num_classes: int, alpha_bar_T: float,
                 alpha_bar_0: float) -> None:
        super().__init__()
        self.trainable = trainable
        if trainable:
            self.embed = nn.Parameter(embedding)
        else:
            self.register_buffer("embed", embedding)
        # Whether prototype rows were filled (persisted so a reloaded learner does not refill).
        self.register_buffer("ready", torch.tensor(not bool((embedding == 0).all())))
        self.out = nn.Linear(embedding.shape[1], num_classes)
        self.signal_T = float(alpha_bar_T)
        self.alpha_bar_0 = float(alpha_bar_0)
        self.last_ce = torch.zeros(())

    @property
    def dim(self) -> int:
        return int(self.embed.shape[1])

    def embedding(self) -> Tensor:
        """W_Embed without gradient (what blocks and inference use)."""
        return self.embed.detach()

    def forward(self, x: Tensor) -> Tensor:
        """Class scores of latents ``x`` (B, d)."""
        return self.out(x)

    def forward_loss(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        assert ctx.y is not None
        u = self.embed[ctx.y]
        z_T = math.sqrt(self.signal_T) * u + math.sqrt(1 - self.signal_T) * x
        scores = self.out(z_T)
        ce = F.cross_entropy(scores, ctx.y)
        self.last_ce = ce.detach()
        loss = ce
        if self.trainable:
            loss = loss + 0.5 * self.alpha_bar_0 * u.pow(2).sum(1).mean()  # KL(q(z_0|y) ‖ N(0,I))
            for weight, logits in ctx.get("block_terms", ()):
                u_hat = F.softmax(logits.detach().float(), dim=1) @ self.embed.float()
                loss = loss + weight * (u_hat - u).pow(2).sum(1).mean()
        return scores, loss


def sinusoidal(t: Tensor, dim: int) -> Tensor:
    """Transformer-style positional embedding of times t ∈ [0, 1] (scaled to 0..1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class MonotoneGamma(nn.Module):
    """γ̄(t): increasing in t, γ̄(0) = 0 and γ̄(1) = 1 (positive weights through softplus)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros(1))
        self.b1 = nn.Parameter(torch.zeros(1))
        self.w2 = nn.Parameter(torch.randn(hidden) * 0.5)
        self.b2 = nn.Parameter(torch.randn(hidden) * 0.5)
        self.w3 = nn.Parameter(torch.zeros(hidden))

    def _raw(self, t: Tensor) -> Tensor:
        y1 = F.softplus(self.w1) * t + self.b1
        h = torch.sigmoid(y1[:, None] * F.softplus(self.w2) + self.b2)
        return y1 + h @ F.softplus(self.w3)

    def forward(self, t: Tensor) -> Tensor:
        ends = self._raw(torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype))
        return (self._raw(t) - ends[0]) / (ends[1] - ends[0])
