"""A model as an arch spec (issue #19, item 1): the ``model:`` grammar round-trips, bad settings are
one clear error, and a run directory never makes localearn import a model factory the user did not
name again (issue #23 S1): ``localearn eval`` and ``--resume`` refuse it, and weight-loading options
are refused for the model zoos."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from localearn.cli import main
from localearn.errors import ConfigError, LocalearnError
from localearn.models import load_model, model_arch, parse_model_spec
from localearn.models.spec import check_named


def test_spec_strings_round_trip_and_keep_case() -> None:
    text = model_arch("mypkg.Nets:Build", ["layer1", "layer2"], None, {"width": 8, "stem": "cifar", "flag": True})
    assert text == "model:mypkg.Nets:Build blocks=layer1,layer2 balance=activations flag=true stem=cifar width=8"
    spec = parse_model_spec(text)
    assert (spec.source, spec.blocks, spec.model_options) == ("mypkg.Nets:Build", ("layer1", "layer2"),
                                                              {"flag": True, "stem": "cifar", "width": 8})
    assert str(spec) == text and not spec.safe
    short = parse_model_spec("model:torchvision:resnet18")
    assert str(short) == "model:torchvision:resnet18 blocks=4 balance=activations" and short.safe


@pytest.mark.parametrize(("text", "message"), [
    ("model:resnet18", r"expected torchvision:NAME, timm:NAME or package.module:factory"),
    ("model:torchvision:resnet18 blocks=0", r"blocks=0: need at least 1 block"),
    ("model:torchvision:resnet18 balance=memory", r"balance='memory': expected one of activations, flops, params"),
    ("model:torchvision:resnet18 blocks=layer1 balance=flops", r"balance applies to a block count"),
    ("model:torchvision:resnet18 depth", r"'depth' is not KEY=VALUE"),
    ("model:object:ResNet blocks=4", r"was a Python object given to localearn.localize\(\)"),
])
def test_bad_specs_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_spec(text)


def test_model_zoos_never_load_weights() -> None:
    with pytest.raises(ConfigError, match=r"option checkpoint_path would load weights"):
        load_model("timm:resnet10t", 10, (3, 32, 32), {"checkpoint_path": "/tmp/x.pth"})
    with pytest.raises(ConfigError, match=r"option weights would load weights"):
        load_model("torchvision:resnet18", 10, (3, 32, 32), {"weights": "DEFAULT"})


def test_stored_factories_are_rebuilt_only_when_named_again() -> None:
    stored = "model:evil.module:build blocks=2 balance=activations"
    with pytest.raises(LocalearnError, match=r"run of the model evil.module:build, which names code to import; "
                                             r"a run directory is data, never code: name the model again with --model"):
        check_named(stored, None, "run")
    check_named(stored, "evil.module:build", "run")  # named by the user: allowed
    check_named("model:torchvision:resnet18 blocks=2 balance=activations", None, "run")  # a zoo name: safe
    with pytest.raises(LocalearnError, match=r"holds a run of the model torchvision:resnet18, not timm:resnet18"):
        check_named("model:torchvision:resnet18", "timm:resnet18", "run")
    with pytest.raises(LocalearnError, match=r"holds a run of the architecture mlp:2x8, not of the model"):
        check_named("mlp:2x8", "torchvision:resnet18", "run")


FACTORY = '''
    import torch
    from torch import nn

    CALLS = []

    def build(num_classes, input_shape):
        CALLS.append(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                             nn.Linear(16, num_classes))
'''


def test_eval_and_resume_of_a_factory_model_need_it_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usernets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["train", "--algo", "dgl", "--model", "usernets:build", "--blocks", "2", "--dataset", "digits",
            "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    calls = sys.modules["usernets"].CALLS
    before = len(calls)
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names code to import" in err[0] and "--model usernets:build" in err[0]
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert "a run directory is data, never code" in capsys.readouterr().err
    assert len(calls) == before  # the factory was never called
    assert main(["eval", str(out), "--model", "usernets:build", "--json"]) == 0
    assert '"accuracy"' in capsys.readouterr().out and len(calls) == before + 1


@pytest.mark.parametrize(("args", "message"), [
    (["--blocks", "4"], r"blocks, balance and model options describe a model: give it with --model SOURCE"),
    (["--model", "torchvision:resnet18", "--arch", "mlp:2x8"], r"give either an architecture .* or a model"),
    (["--model", "torchvision:resnet18", "--algo", "forward_forward"],
     r"forward_forward builds its own layers and does not train over a model's blocks; learners that do: "
     r"auglocal, backprop, cafo, dgl, infopro, mono_forward"),
    (["--model", "torchvision:resnet1"], r"torchvision has no classification model 'resnet1'; did you mean"),
    (["--model", "torchvision:resnet18", "--blocks", "layer1.0.conv1"],
     r"cannot cut after 'layer1.0.conv1': a skip connection crosses it"),
    (["--model", "torchvision:resnet18", "--model-opt", "weights=DEFAULT"], r"would load weights"),
    (["--model", "torchvision:resnet18", "--blocks", "layer1", "--balance", "flops"], r"balance applies to a block"),
])
def test_cli_model_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--dataset", "digits", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "x")]
    code = main([*base, *(["--algo", "dgl"] if "--algo" not in args else []), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
