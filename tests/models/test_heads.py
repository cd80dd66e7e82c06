"""Heads by feature shape (issue #19, item 2): every kind on the shapes it fits, DGL's MLP-SR and
InfoPro's 1c2f structure, InfoPro's decoder on maps and token grids, and the errors that list the
kinds that fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localearn.errors import ConfigError
from localearn.models import HEAD_KINDS, make_decoder, make_head

SHAPES = {"map": (16, 32, 32), "tokens": (65, 24), "vector": (40,)}


@pytest.mark.parametrize(("family", "kind"), [(f, k) for f, kinds in HEAD_KINDS.items() for k in kinds])
def test_every_kind_scores_its_shapes_and_learns(family: str, kind: str) -> None:
    torch.manual_seed(0)
    head = make_head(kind, SHAPES[family], 7)
    x = torch.randn(6, *SHAPES[family], requires_grad=True)
    y = torch.arange(6)
    out = head(x)
    assert out.shape == (6, 7)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05)
    losses = []
    for _ in range(3):  # a few steps on a fixed batch: the head's own loss falls
        loss = nn.functional.cross_entropy(head(x.detach()), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_auto_picks_by_shape() -> None:
    assert isinstance(make_head("auto", (8, 4, 4), 3)[0], nn.AdaptiveAvgPool2d)  # DGL's pool + linear
    tokens = make_head("auto", (5, 12), 3)
    assert str(tokens[0]) == "TokenPool(mean)" and tokens[1].in_features == 12
    assert isinstance(make_head("auto", (12,), 3)[1], nn.Linear)


def test_cls_head_reads_the_first_token_only() -> None:
    head = make_head("cls", (5, 4), 2)
    x = torch.randn(3, 5, 4)
    y = x.clone()
    y[:, 1:] = torch.randn(3, 4, 4)
    assert torch.equal(head(x), head(y))


def test_mlp_sr_is_dgls_auxiliary_head() -> None:
    head = make_head("mlp_sr", (16, 30, 30), 10)
    assert head[0].output_size == (8, 8)  # ceil(30/4)
    convs = [m for m in head if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.kernel_size == (1, 1) and c.bias is None and c.out_channels == 16 for c in convs)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [lin.in_features for lin in linears] == [64] * 4 and linears[-1].out_features == 10
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == 3


def test_conv_head_follows_infopro_channels() -> None:
    for shape, channels, stride in [((16, 32, 32), 32, 2), ((32, 16, 16), 64, 2), ((64, 8, 8), 64, 1)]:
        conv = make_head("conv", shape, 10)[0]
        assert (conv.out_channels, conv.stride) == (channels, (stride, stride))
    assert make_head("conv", (64, 8, 8), 10, channels=96)[0].out_channels == 96
    assert make_head("conv", (64, 8, 8), 10)[-3].out_features == 128


def test_linear_head_is_the_flattened_projection() -> None:
    assert make_head("linear", (64, 8, 8), 10)[1].in_features == 4096


def test_decoder_rebuilds_the_image_from_maps_and_token_grids() -> None:
    for features in [(32, 8, 8), (65, 24), (64, 24)]:
        decoder = make_decoder(features, (3, 32, 32))
        image = decoder(torch.randn(2, *features))
        assert image.shape == (2, 3, 32, 32) and image.min() >= 0 and image.max() <= 1
    assert make_decoder((32, 8, 8), (1, 28, 28))(torch.randn(2, 32, 8, 8)).shape == (2, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"tokens on a square grid; 12 tokens are neither"):
        make_decoder((12, 24), (3, 32, 32))


@pytest.mark.parametrize(("kind", "shape", "message"), [
    ("cls", (16, 8, 8), r"head 'cls' does not fit features of shape \(16, 8, 8\) \(a feature map \(C, H, W\)\); "
                        r"heads that fit: auto, pool_linear, mlp_sr, conv, mlp, linear"),
    ("conv", (65, 24), r"head 'conv' does not fit .*\(a token sequence \(N, D\)\); heads that fit: auto, mean, cls, "
                       r"mlp, linear"),
    ("pooling", (40,), r"head 'pooling' is not a head kind; it does not fit .*heads that fit: auto, mlp, linear"),
    ("auto", (2, 3, 4, 5), r"features of shape \(2, 3, 4, 5\) are not a feature map .*no head fits them"),
])
def test_heads_that_do_not_fit_list_the_ones_that_do(kind: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_head(kind, shape, 10)
    with pytest.raises(ConfigError, match=r"head 'mlp': .*unexpected keyword argument 'width'"):
        make_head("mlp", (40,), 10, width=3)
