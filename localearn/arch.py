"""The architecture spec language shared by the CLI, studies and the Python API.

Grammar (``KIND:BODY``):

* ``mlp:LxW`` -- ``L`` hidden layers of width ``W`` (the papers' "2×1000"), e.g. ``mlp:2x1000``.
* ``mlp:I-W1-W2-...`` -- the input width ``I`` first, then each hidden width, as the papers write
  "784-1000-1000"; ``I`` is checked against the dataset. A group may be ``LxW``:
  ``mlp:784-3x1000``.
* ``cnn:C1-C2-...`` -- one block per entry: conv3×3 (pad 1) → ReLU → maxpool 2 → BatchNorm, as in
  CaFo and the Beyond-BP CNN, e.g. ``cnn:32-128-512``.
* ``gcn:WxL``, ``sage:WxL``, ``gat:WxL`` -- graph convolutions of width ``W`` and depth ``L``, as
  PyG's ``hidden_channels × num_layers`` (note the order: width first), e.g. ``gcn:128x2``.
* ``model:SOURCE blocks=K ...`` -- a model cut into blocks (:mod:`localearn.models.spec`), e.g.
  ``model:torchvision:resnet18 blocks=4 balance=activations``.

A learner turns the spec into its layers with :func:`build_trunk`; the backprop baseline turns the
same spec into one network, so both arms of a comparison share their trunk exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from localearn.errors import ConfigError

MLP_KINDS = ("mlp",)
CNN_KINDS = ("cnn",)
GRAPH_KINDS = ("gcn", "sage", "gat")
KINDS = MLP_KINDS + CNN_KINDS + GRAPH_KINDS


@dataclass(frozen=True)
class ArchSpec:
    """A parsed architecture spec.

    Attributes:
        kind: ``mlp``, ``cnn``, ``gcn``, ``sage`` or ``gat``.
        widths: hidden widths (MLP, graph) or channels (CNN), one per layer or block.
        input_dim: the input width written in the spec, if any (MLP only).
        raw: the spec as written.
    """

    kind: str
    widths: tuple[int, ...]
    input_dim: int | None = None
    raw: str = ""

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def is_graph(self) -> bool:
        return self.kind in GRAPH_KINDS

    def __str__(self) -> str:
        return self.raw or f"{self.kind}:{'-'.join(map(str, self.widths))}"


_GROUP = re.compile(r"^(\d+)x(\d+)$")


def _positive(token: str, spec: str) -> int:
    if not token.isdigit() or int(token) <= 0:
        raise ConfigError(f"bad architecture spec {spec!r}: {token!r} is not a positive integer")
    return int(token)


def parse_arch(spec: str | ArchSpec) -> ArchSpec:
    """Parse an architecture spec such as ``mlp:2x1000`` or ``cnn:32-128-512``.

    Raises:
        ConfigError: naming the spec and what is wrong with it.
    """
    if isinstance(spec, ArchSpec):
        return spec
    if str(spec).strip().startswith("model:"):  # a model's blocks (issue #19): names keep their case
        from localearn.models.spec import parse_model_spec

        return parse_model_spec(str(spec))
    text = str(spec).strip().lower().replace("×", "x")
    if ":" not in text:
        raise ConfigError(
            f"bad architecture spec {spec!r}: expected KIND:BODY with KIND one of "
            f"{', '.join(KINDS)} (e.g. mlp:2x1000, cnn:32-128-512, gcn:128x2)"
        )
    kind, body = (part.strip() for part in text.split(":", 1))
    if kind not in KINDS:
        raise ConfigError(
            f"bad architecture spec {spec!r}: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}"
        )
    if not body:
        raise ConfigError(f"bad architecture spec {spec!r}: no layers given after {kind!r}")
    if kind in GRAPH_KINDS:
        m = _GROUP.match(body)
        if m:
            width, depth = _positive(m.group(1), spec), _positive(m.group(2), spec)
            return ArchSpec(kind, (width,) * depth, None, text)
        widths = tuple(_positive(t, spec) for t in body.split("-"))
        return ArchSpec(kind, widths, None, text)
    parts = body.split("-")
    if kind in CNN_KINDS:
        return ArchSpec(kind, tuple(_positive(t, spec) for t in parts), None, text)
    # MLP: a single LxW group, or an input width followed by hidden widths / groups.
    if len(parts) == 1:
        m = _GROUP.match(parts[0])
        if not m:
            raise ConfigError(
                f"bad architecture spec {spec!r}: write mlp:LxW (e.g. mlp:2x1000) or list the "
                "input width first (e.g. mlp:784-1000-1000)"
            )
        depth, width = _positive(m.group(1), spec), _positive(m.group(2), spec)
        return ArchSpec(kind, (width,) * depth, None, text)
    input_dim = _positive(parts[0], spec)
    hidden: list[int] = []
    for token in parts[1:]:
        m = _GROUP.match(token)
        if m:
            hidden += [_positive(m.group(2), spec)] * _positive(m.group(1), spec)
        else:
            hidden.append(_positive(token, spec))
    return ArchSpec(kind, tuple(hidden), input_dim, text)


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv3×3 (pad 1) → ReLU → maxpool 2 → BatchNorm (CaFo, docs/learners/cafo.md#equations; eps 1e-4 as official)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(out_ch, eps=1e-4),
    )


def kaiming_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A Linear with Kaiming-uniform weights for ReLU (bound √(6/fan_in)) and zero bias.

    The Mono-Forward initialisation (docs/learners/mono_forward.md#equations, as in Beyond-BP); the BP twin shares it.
    """
    lin = nn.Linear(in_dim, out_dim)
    nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
    nn.init.zeros_(lin.bias)
    return lin


def build_trunk(spec: ArchSpec | str, input_shape: tuple[int, ...]) -> tuple[list[nn.Module], list[tuple[int, ...]]]:
    """Turn a spec into its blocks, one per local layer, and each block's output shape.

    MLP blocks are ``[Flatten →] Linear → ReLU``; CNN blocks are :func:`conv_block`. Graph specs
    are built by the graph learners themselves (their convolutions need the edges).

    Args:
        spec: the architecture spec.
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``.

    Returns:
        The blocks and their per-sample output shapes.

    Raises:
        ConfigError: when the spec does not fit the input.
    """
    spec = parse_arch(spec)
    if spec.kind == "modules":  # a user's own blocks (localearn.modules.from_modules), used as given
        return list(spec.blocks), list(spec.shapes)  # type: ignore[attr-defined]
    if spec.kind == "model":  # learners that train over a model's blocks build them (localearn.models.trunk)
        raise ConfigError(f"this learner builds its layers from mlp: or cnn: specs and does not train over a "
                          f"model's blocks ({spec}); `localearn algos` lists the learners that take --model")
    blocks: list[nn.Module] = []
    shapes: list[tuple[int, ...]] = []
    if spec.kind in MLP_KINDS:
        in_dim = math.prod(input_shape)
        if spec.input_dim is not None and spec.input_dim != in_dim:
            raise ConfigError(
                f"architecture {spec} declares input width {spec.input_dim}, but the data has "
                f"{in_dim} features per sample (shape {tuple(input_shape)})"
            )
        for i, width in enumerate(spec.widths):
            layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
            layers += [kaiming_linear(in_dim, width), nn.ReLU()]
            blocks.append(nn.Sequential(*layers))
            shapes.append((width,))
            in_dim = width
    elif spec.kind in CNN_KINDS:
        if len(input_shape) != 3:
            raise ConfigError(
                f"architecture {spec} needs image input (C, H, W), but the data has shape "
                f"{tuple(input_shape)}"
            )
        c, h, w = input_shape
        for ch in spec.widths:
            if h < 2 or w < 2:
                raise ConfigError(
                    f"architecture {spec} has too many pooling blocks for {tuple(input_shape)} input"
                )
            blocks.append(conv_block(c, ch))
            c, h, w = ch, h // 2, w // 2
            shapes.append((c, h, w))
    else:
        raise ConfigError(f"architecture {spec} is a graph spec; use a graph learner and dataset")
    return blocks, shapes


def flat_dim(shape: tuple[int, ...]) -> int:
    """Number of features of one sample of ``shape`` once flattened."""
    return math.prod(shape)


def trunk_output(blocks: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run ``x`` through ``blocks`` in order (used by baselines and tests)."""
    for block in blocks:
        x = block(x)
    return x
