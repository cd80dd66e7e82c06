"""FF and Mono-Forward layers through their fused ops: Triton (interpreter) and torch.compile give
the same training as the torch reference; the policy reaches every layer; run.json records it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from localearn.kernels import configure_layers, triton_available

import localearn
from localearn.errors import ConfigError
from localearn.testing.conformance import make_fixture, train_all

EQUIVALENCE = textwrap.dedent(
    """
    import torch
    from localearn.kernels import configure_layers
    from localearn.testing.conformance import train_all, make_fixture
    from localearn.utils import seed_everything
    import localearn
    for algo, opts in [("forward_forward", {"arch": "mlp:2x33", "goodness": "sum"}),
                       ("forward_forward", {"arch": "mlp:2x33", "goodness": "mean", "straight_through": False,
                                            "collab": "preceding"}),
                       ("mono_forward", {"arch": "mlp:2x33", "schedule": "joint"})]:
        runs = []
        for impl in ("torch", "triton"):
            fx = make_fixture(algo, seed=0, **opts)
            configure_layers(fx.learner, impl)
            seed_everything(1)  # the same negatives in both runs
            losses = train_all(fx, 4)
            used = {layer.kernel_used for layer in fx.learner.layers}
            assert used == {impl}, (algo, impl, used)
            runs.append((losses, fx.learner.state_dict()))
        (l_t, sd_t), (l_k, sd_k) = runs
        torch.testing.assert_close(torch.tensor(l_k), torch.tensor(l_t), rtol=1e-4, atol=1e-5)
        for key in sd_t:
            torch.testing.assert_close(sd_k[key], sd_t[key], rtol=1e-4, atol=1e-5, msg=f"{algo} {key}")
    # The whole Trainer with kernels="triton" on digits: the same test loss as torch, recorded in run.json.
    res = {impl: localearn.fit("ff", "digits", arch="mlp:2x20", epochs=1, batch_size=256, progress=False,
                               kernels=impl) for impl in ("torch", "triton")}
    for impl, r in res.items():
        assert {v["kernel"] for v in r["metrics"]["per_layer"].values()} == {impl}, r["metrics"]["per_layer"]
    assert abs(res["torch"]["metrics"]["test_loss"] - res["triton"]["metrics"]["test_loss"]) < 1e-4
    print("ok")
    """
)

CONFORMANCE = textwrap.dedent(
    """
    from localearn.testing import CHECKS
    for algo in ("forward_forward", "mono_forward"):
        for name, check in sorted(CHECKS.items()):
            check(algo)
    print("ok")
    """
)


def _interpret(code: str, **env: str) -> None:
    full = {**os.environ, "TRITON_INTERPRET": "1", **env}  # set before triton is imported
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_learners_train_the_same_with_triton_as_with_torch() -> None:
    """FF (sum/mean, straight-through on/off, CFF γ) and MF: losses and parameters after 4 steps."""
    _interpret(EQUIVALENCE)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_conformance_passes_with_kernels_forced_to_triton() -> None:
    _interpret(CONFORMANCE, LOCALEARN_KERNELS="triton")


def _cxx_missing() -> str | None:
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU (Inductor) needs a C++ compiler; none is on PATH"
    return None


@pytest.mark.skipif(_cxx_missing() is not None, reason=str(_cxx_missing()))
@pytest.mark.parametrize(("algo", "opts"), [("forward_forward", {}), ("mono_forward", {"schedule": "joint"})])
def test_compile_trains_the_same_as_eager(algo: str, opts: dict[str, Any]) -> None:
    runs = []
    for compile_ in (False, True):
        fx = make_fixture(algo, seed=0, **opts)
        configure_layers(fx.learner, "torch", compile=compile_)
        torch.manual_seed(1)
        losses = train_all(fx, 3)
        assert {layer.kernel_used for layer in fx.learner.layers} == {"compile" if compile_ else "torch"}
        runs.append((losses, fx.learner.state_dict()))
    torch.testing.assert_close(torch.tensor(runs[1][0]), torch.tensor(runs[0][0]), rtol=1e-4, atol=1e-5)
    for key, value in runs[0][1].items():
        torch.testing.assert_close(runs[1][1][key], value, rtol=1e-4, atol=1e-5)


def test_run_json_records_the_kernel_of_each_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    r = localearn.fit("mf", "digits", arch="mlp:2x16", epochs=1, progress=False, kernels="torch")
    assert {name: v["kernel"] for name, v in r["metrics"]["per_layer"].items()} == {"layer0": "torch",
                                                                                     "layer1": "torch"}


def test_policy_errors_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="kernels must be one of auto, torch, triton, got 'cuda'"):
        localearn.fit("mf", "digits", arch="mlp:1x8", epochs=1, progress=False, kernels="cuda")
    with pytest.raises(ConfigError, match="exclude each other"):
        localearn.fit("mf", "digits", arch="mlp:1x8", epochs=1, progress=False, kernels="triton", compile=True)
    fx = make_fixture("forward_forward")
    configure_layers(fx.learner, "triton")  # a CPU tensor without the interpreter: one clear error
    with pytest.raises(ConfigError, match="impl='triton' cannot run here"):
        train_all(fx, 1)


def test_cli_flags_reach_the_layers(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from localearn.cli import main

    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--algo", "mf", "--arch", "mlp:1x8", "--epochs", "1", "--kernels", "torch",
                 "--no-progress", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["kernels"] == "torch" and run["config"]["compile"] is False
    assert run["metrics"]["per_layer"]["layer0"]["kernel"] == "torch"


def test_auto_turns_triton_on_only_where_default_on_lists_the_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA ``auto`` resolves to Triton; a layer still runs torch unless DEFAULT_ON lists the shape."""
    import localearn.kernels as k

    monkeypatch.delenv("LOCALEARN_KERNELS", raising=False)
    monkeypatch.setattr(k, "resolve_impl", lambda impl, *t: "triton" if impl == "auto" else impl)  # as on CUDA
    layer = make_fixture("forward_forward").learner.layers[0]
    x, w = torch.zeros(512, 64), torch.zeros(2000, 64)
    monkeypatch.setitem(k.DEFAULT_ON, "ff_layer", [])
    assert k.choose(layer, "ff_layer", x, w) == "torch" and layer.kernel_used == "torch"
    monkeypatch.setitem(k.DEFAULT_ON, "ff_layer", [(torch.float32, 512, 2000)])
    assert k.choose(layer, "ff_layer", x, w) == "triton"
    assert k.choose(layer, "ff_layer", x[:511], w) == "torch"  # below the measured batch
    layer.kernel_compile = True
    assert k.choose(layer, "ff_layer", x, w) == "compile"


def test_one_documented_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOCALEARN_KERNELS > --kernels triton > --compile > --kernels torch > auto (kernels/__init__.py)."""
    import localearn.kernels as k

    monkeypatch.setattr(k, "resolve_impl", lambda impl, *t: "triton" if impl in ("auto", "triton") else impl)
    monkeypatch.setitem(k.DEFAULT_ON, "ff_layer", [(torch.float32, 1, 1)])  # auto would pick Triton
    layer = make_fixture("forward_forward").learner.layers[0]
    x, w = torch.zeros(8, 4), torch.zeros(4, 4)
    cases = [  # (env, kernels, compile) -> implementation
        ("torch", "triton", False, "torch"), ("triton", "torch", True, "triton"), ("", "triton", False, "triton"),
        ("", "torch", True, "compile"), ("", "auto", True, "compile"), ("", "torch", False, "torch"),
        ("", "auto", False, "triton"),
    ]
    for env, kernels, compile_, want in cases:
        monkeypatch.setenv("LOCALEARN_KERNELS", env)
        layer.kernel_impl, layer.kernel_compile = kernels, compile_
        assert k.choose(layer, "ff_layer", x, w) == want == layer.kernel_used, (env, kernels, compile_)
