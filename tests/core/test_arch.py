from __future__ import annotations

import pytest
import torch

from localearn.arch import build_trunk, parse_arch
from localearn.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "kind", "widths", "input_dim"),
    [
        ("mlp:2x1000", "mlp", (1000, 1000), None),
        ("mlp:784-1000-1000", "mlp", (1000, 1000), 784),
        ("mlp:784-3x1000", "mlp", (1000, 1000, 1000), 784),
        ("MLP:2×500", "mlp", (500, 500), None),
        ("cnn:32-128-512", "cnn", (32, 128, 512), None),
        ("gcn:128x2", "gcn", (128, 128), None),
        ("gat:64x3", "gat", (64, 64, 64), None),
    ],
)
def test_parse(spec: str, kind: str, widths: tuple[int, ...], input_dim: int | None) -> None:
    a = parse_arch(spec)
    assert (a.kind, a.widths, a.input_dim) == (kind, widths, input_dim)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("mlp", "expected KIND:BODY"),
        ("rnn:2x10", "unknown kind 'rnn'"),
        ("mlp:", "no layers"),
        ("mlp:abc", "mlp:LxW"),
        ("mlp:784-0-10", "'0' is not a positive integer"),
        ("cnn:32-x", "'x' is not a positive integer"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_arch(spec)


def test_trunk_shapes_and_input_check() -> None:
    blocks, shapes = build_trunk("cnn:8-16", (1, 28, 28))
    assert shapes == [(8, 14, 14), (16, 7, 7)]
    x = torch.randn(2, 1, 28, 28)
    for b in blocks:
        x = b(x)
    assert x.shape == (2, 16, 7, 7)
    with pytest.raises(ConfigError, match="declares input width 100"):
        build_trunk("mlp:100-10", (1, 28, 28))
    with pytest.raises(ConfigError, match="too many pooling blocks"):
        build_trunk("cnn:4-4-4-4", (1, 8, 8))
    with pytest.raises(ConfigError, match="needs image input"):
        build_trunk("cnn:4", (64,))


def test_kaiming_init_bound() -> None:
    blocks, _ = build_trunk("mlp:2x500", (1, 28, 28))
    w = blocks[0][1].weight
    assert float(w.abs().max()) <= (6 / 784) ** 0.5
    assert float(blocks[0][1].bias.abs().max()) == 0.0
