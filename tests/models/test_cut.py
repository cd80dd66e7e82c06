"""Cutting (issue #19, item 1): K blocks balanced by activations, FLOPs or parameters, named cuts,
the model's own head kept in the last block, blocks that share the model's parameters and chain to
its output, and one clear error for every cut that cannot be made."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localearn.errors import ConfigError
from localearn.models import Cut, cut_model, load_model

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return load_model("torchvision:resnet18", 10, SHAPE)  # the CIFAR stem


def chain(cut: Cut, x: torch.Tensor) -> torch.Tensor:
    for block in cut.blocks:
        x = block(x)
    return x


@pytest.mark.parametrize("train", [False, True])
def test_blocks_chained_compute_the_model(resnet: nn.Module, train: bool) -> None:
    cut = cut_model(resnet, 4, SHAPE)
    resnet.train(train)  # BatchNorm on batch statistics in train mode, running ones in eval mode
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(chain(cut, x), resnet(x), atol=1e-6)
        h = x
        for block, shape in zip(cut.blocks, cut.shapes, strict=True):
            h = block(h)
            assert tuple(h.shape[1:]) == shape
    resnet.eval()


def test_k_blocks_balance_activation_memory(resnet: nn.Module) -> None:
    two = cut_model(resnet, 2, SHAPE)
    assert two.points == ("layer1",)  # the stem and layer1 hold about half of all activations
    assert 0.5 < two.share()[0] < 0.56 and two.names[0] == ("conv1", "bn1", "relu", "maxpool", "layer1")
    four = cut_model(resnet, 4, SHAPE)
    assert four.points == ("layer1.0", "layer1", "layer2") and len(four) == 4
    assert four.names[-1][-2:] == ("avgpool", "fc") and four.shapes[-1] == (10,)  # the model's own head
    assert max(four.share()) < 0.32  # 0.31: layer1.0 with the stem
    total = sum(p.numel() for p in resnet.parameters())
    assert sum(c.params for c in four.costs) == total


def test_each_balance_minimises_its_own_largest_block(resnet: nn.Module) -> None:
    cuts = {kind: cut_model(resnet, 3, SHAPE, balance=kind) for kind in ("activations", "flops", "params")}
    attr = {"activations": "activation_bytes", "flops": "flops", "params": "params"}
    for kind, cut in cuts.items():
        own = max(getattr(c, attr[kind]) for c in cut.costs)
        assert all(own <= max(getattr(c, attr[kind]) for c in other.costs) for other in cuts.values())
    # activations pile up early, FLOPs evenly per stage, parameters late (the first cut; the second
    # is a tie under the largest block)
    assert [cuts[k].points[0] for k in cuts] == ["layer1.0", "layer1", "layer3"]


def test_named_cuts_and_shared_parameters(resnet: nn.Module) -> None:
    cut = cut_model(resnet, ["layer1", "layer2", "layer3"], SHAPE)
    assert cut.names[1:] == (("layer2",), ("layer3",), ("layer4", "avgpool", "fc"))
    assert cut.shapes[:3] == ((64, 32, 32), (128, 16, 16), (256, 8, 8))
    params = {id(p) for p in resnet.parameters()}
    assert all(id(p) in params for block in cut.blocks for p in block.parameters())
    merged = {k: v for block in cut.blocks for k, v in block.state_dict().items()}
    assert merged.keys() == resnet.state_dict().keys()  # a cut model's weights load into the original
    optimizer = torch.optim.SGD(cut.blocks[1].parameters(), lr=0.1)
    x, y = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    resnet.train()
    h = cut.blocks[0](x).detach()
    nn.functional.cross_entropy(nn.Sequential(*cut.blocks[1:])(h), y).backward()
    before = resnet.layer2[0].conv1.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, resnet.layer2[0].conv1.weight)  # the model itself was trained
    resnet.eval()
    with torch.no_grad():
        h = cut.blocks[2](cut.blocks[1](h))
        assert torch.allclose(cut.head(cut.last_trunk(h)), cut.blocks[-1](h)) and cut.head_shape == (512, 4, 4)


@pytest.mark.parametrize(("blocks", "message"), [
    (["layer1.0.conv1"], r"cannot cut after 'layer1\.0\.conv1': a skip connection crosses it \(2 tensors live "
                         r"across: maxpool, layer1\.0\.conv1\); nearest valid cut points: 'maxpool', 'layer1\.0'"),
    (["layer9"], r"cannot cut after 'layer9': not a module of ResNet; nearest valid cut points: .*layer1"),
    (["avgpool"], r"ResNet's own head \(avgpool, fc\) follows 'layer4' and stays whole in the last block"),
    (["layer2", "layer1"], r"'layer1' does not come after 'layer2'"),
    (10, r"ResNet has only 8 cut points for automatic cuts \(maxpool, layer1\.0, .*\), so at most 9 blocks"),
    (0, r"blocks=0: need at least 1 block"),
])
def test_cuts_that_cannot_be_made_say_why(resnet: nn.Module, blocks: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cut_model(resnet, blocks, SHAPE)  # type: ignore[arg-type]


def test_mobilenet_is_cut_inside_its_features() -> None:
    torch.manual_seed(0)
    model = load_model("torchvision:mobilenet_v2", 10, SHAPE, {"width_mult": 0.25}).eval()
    cut = cut_model(model, 4, SHAPE)
    assert all(p.startswith("features.") for p in cut.points)
    assert cut.names[-1][-1] == "classifier"
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(chain(cut, x), model(x), atol=1e-6)


def test_vit_is_cut_between_encoder_layers() -> None:
    torch.manual_seed(0)
    opts = {"num_layers": 4, "hidden_dim": 32, "mlp_dim": 64, "num_heads": 2}
    vit = load_model("torchvision:vit_b_16", 10, SHAPE, opts).eval()
    cut = cut_model(vit, 3, SHAPE)
    assert all(p.startswith("encoder.layers.encoder_layer_") for p in cut.points)
    assert cut.shapes[:2] == ((65, 32), (65, 32)) and cut.head_shape == (65, 32)
    mid = cut_model(vit, ["encoder.layers.encoder_layer_1:add_3", "encoder.layers.encoder_layer_2"], SHAPE)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(chain(cut, x), vit(x), atol=1e-5) and torch.allclose(chain(mid, x), vit(x), atol=1e-5)


class Gate(nn.Module):
    """Branches on its input's values (untraceable) and on self.training (frozen if traced through)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lin(x)
        return x * 2 if x.sum() > 0 else x


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + (1.0 if self.training else 0.0)


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.gate, self.noisy, self.out = nn.Linear(4, 8), Gate(), Noisy(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.out(torch.relu(self.noisy(self.gate(torch.relu(self.a(x))))) * scale)


def test_untraceable_submodules_become_single_steps() -> None:
    torch.manual_seed(0)
    net = UserNet()
    cut = cut_model(net, 3, (4,))
    assert cut.points == ("relu", "gate") and cut.names == (("a",), ("gate",), ("noisy", "out"))
    x = torch.randn(5, 4)
    for train in (True, False):
        net.train(train)
        assert torch.allclose(chain(cut, x), net(x))  # Noisy's train/eval branch is still live


def test_untraceable_forward_names_the_way_out() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) if x.sum() > 0 else -self.lin(x)

    with pytest.raises(ConfigError, match=r"torch\.fx cannot trace Branchy\.forward .*pass the blocks as modules: "
                                          r"<Learner>\.from_modules"):
        cut_model(Branchy(), 2, (4,))
    with pytest.raises(ConfigError, match=r"balance='memory': expected one of activations, flops, params"):
        cut_model(Branchy(), 2, (4,), balance="memory")
