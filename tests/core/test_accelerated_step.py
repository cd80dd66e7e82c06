"""The accelerator-grade step (issue #20): precision, per-layer gradient scalers, the update policy,
data on the device, compile options, and what run.json records."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import localearn
from localearn.data import load_dataset
from localearn.data.base import ImageData, place_data
from localearn.errors import ConfigError
from localearn.testing.conformance import make_fixture, train_all
from localearn.update import UpdatePolicy


def test_bf16_autocasts_the_step_and_keeps_parameters_and_optimizer_state_fp32() -> None:
    fx = make_fixture("mono_forward", schedule="joint")
    fx.policy = UpdatePolicy(precision="bf16").attach(fx.learner)
    stage = fx.learner.stages()[0]
    fx.learner.start_epoch(stage, 1, 1)
    h, loss = fx.learner.local_layers[0].train_step(fx.inputs, fx.learner.make_context(fx.batch))
    assert h.dtype == torch.bfloat16 and loss.dtype == torch.float32  # the forward ran in bf16
    assert all(p.dtype == torch.float32 for p in fx.learner.parameters())
    state = fx.learner.local_layers[0].optimizer.state  # type: ignore[union-attr]
    assert state and all(v.dtype == torch.float32 for s in state.values() for k, v in s.items() if k != "step")


def test_fp16_scales_each_layer_on_its_own() -> None:
    """An overflow in one layer skips that layer's step only (one GradScaler per layer)."""
    fx = make_fixture("mono_forward", schedule="joint")
    fx.policy = UpdatePolicy(precision="fp16").attach(fx.learner)
    first, second = fx.learner.local_layers
    with torch.no_grad():
        second.proj.weight.fill_(6e4)  # its fp16 logits overflow: inf loss, inf gradients
    before = [[p.detach().clone() for p in layer.parameters()] for layer in (first, second)]
    train_all(fx, 1)
    changed = [any(not torch.equal(p, b) for p, b in zip(layer.parameters(), old, strict=True))
               for layer, old in zip((first, second), before, strict=True)]
    assert changed == [True, False]
    scales = {name: s.get_scale() for name, s in zip(("first", "second"), fx.policy._scalers.values(), strict=True)}
    assert scales["second"] < scales["first"]  # only the overflowing layer backed off


def test_fp16_under_the_network_clip_keeps_an_overflow_to_its_own_layer() -> None:
    """A layer that overflows skips its step; its inf stays out of the shared clip norm (else NaN)."""
    fx = make_fixture("mono_forward", schedule="joint")
    fx.policy = UpdatePolicy(precision="fp16", grad_clip=1.0, clip_scope="network").attach(fx.learner)
    first, second = fx.learner.local_layers
    with torch.no_grad():
        second.proj.weight.fill_(6e4)
    before = [p.detach().clone() for p in first.parameters()]
    train_all(fx, 1)
    assert all(torch.isfinite(p).all() for p in fx.learner.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(first.parameters(), before, strict=True))


def test_run_json_records_the_resolved_update_policy(tmp_path: Any) -> None:
    r = localearn.fit("ccl", "digits", arch="mlp:2x16", epochs=1, progress=False, precision="bf16",
                      out=tmp_path / "run")
    assert r["update"]["precision"] == "bf16" and r["config"]["precision"] == "bf16"
    assert r["update"]["clip_scope"] == "network" and "network-wide" in r["update"]["coupling"]  # CCL declares it
    r = localearn.fit("ccl", "digits", arch="mlp:2x16", epochs=1, progress=False, clip_scope="layer")
    assert r["update"]["clip_scope"] == "layer" and "coupling" not in r["update"]  # the run's option wins


@pytest.mark.parametrize(("option", "message"), [
    ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16"),
    ({"clip_scope": "global"}, "clip_scope must be layer or network"),
    ({"lr_schedule": "step"}, "lr_schedule must be one of constant, cosine, cooldown"),
    ({"grad_clip": -1.0}, "grad_clip must be >= 0"),
    ({"data_on_device": "gpu"}, "data_on_device must be auto, on or off"),
    ({"log_every": 0}, "log_every must be a positive integer"),
    ({"cuda_graphs": True}, "cuda_graphs captures compiled steps: use it with compile"),
    ({"cuda_graphs": True, "compile": True}, "needs a CUDA device"),
])
def test_bad_step_options_are_one_line_errors(option: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        localearn.fit("mf", "digits", arch="mlp:1x8", epochs=1, progress=False, device="cpu", **option)


def test_lr_schedules_and_warmup() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    policy = UpdatePolicy(lr_schedule="cosine", lr_warmup_steps=4)
    policy.start_epoch([opt], 1, 3)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        policy.finish_step()
        policy.set_lr([opt])
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])  # linear warm-up over 4 steps
    policy.start_epoch([opt], 2, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 3)).item()))


class _Moved(ImageData):
    def to(self, device: torch.device) -> ImageData:
        self.info["moved_to"] = str(device)
        return self


def test_data_moves_to_the_device_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_dataset("digits")
    assert isinstance(data, ImageData)
    cuda = torch.device("cuda", 0)
    size = data.nbytes()
    assert size is not None and size > 0
    moved = _Moved(**{f.name: getattr(data, f.name) for f in data.__dataclass_fields__.values()})
    moved.info = {}
    assert place_data(moved, torch.device("cpu"), "on") is moved and "moved_to" not in moved.info
    assert place_data(moved, cuda, "off") is moved and "moved_to" not in moved.info
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * size, 8 * size))  # too small for auto
    place_data(moved, cuda, "auto")
    assert "moved_to" not in moved.info
    place_data(moved, cuda, "on")
    assert moved.info["moved_to"] == "cuda:0"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * size, 100 * size))
    moved.info = {}
    place_data(moved, cuda, "auto")
    assert moved.info["moved_to"] == "cuda:0"


def test_data_held_elsewhere_is_shuffled_in_the_same_seeded_order() -> None:
    data = load_dataset("digits")
    assert isinstance(data, ImageData)
    copy = data.to(torch.device("cpu"))  # the same code path a CUDA copy takes
    a = [y for _, y in data.train_batches(64, torch.Generator().manual_seed(3))]
    b = [y for _, y in copy.train_batches(64, torch.Generator().manual_seed(3))]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
