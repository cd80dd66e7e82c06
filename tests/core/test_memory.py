from __future__ import annotations

import torch
from torch import nn

from localearn.measure import SavedTensorMeter, layer_scope


def test_counts_live_saved_bytes_and_excludes_parameters() -> None:
    lin = nn.Linear(100, 50)
    x = torch.randn(32, 100)
    with SavedTensorMeter(list(lin.parameters())) as m:
        h = torch.relu(lin(x))  # Linear saves x (32*100*4), ReLU saves h (32*50*4)
        assert m.current_bytes == 32 * 100 * 4 + 32 * 50 * 4
        h.sum().backward()
        del h
    assert m.current_bytes == 0  # freed with the graph
    assert m.peak_bytes == 32 * 100 * 4 + 32 * 50 * 4


def test_layer_scopes_attribute_increments() -> None:
    a, b = nn.Linear(10, 10), nn.Linear(10, 10)
    x = torch.randn(4, 10)
    with SavedTensorMeter(list(a.parameters()) + list(b.parameters())) as m:
        with layer_scope("a"):
            ha = a(x)  # saves x: 160 bytes
        with layer_scope("b"):
            hb = torch.tanh(b(ha))  # saves ha (160) and tanh output (160)
        hb.sum().backward()
    assert m.per_layer == {"a": 160, "b": 320}
    assert m.peak_bytes == 480


def test_a_storage_saved_twice_counts_once() -> None:
    x = torch.randn(8, 8, requires_grad=True)
    with SavedTensorMeter() as m:
        y = x * x  # saves x twice (self and other)
        assert m.current_bytes == 8 * 8 * 4
        y.sum().backward()


def test_measure_memory_false_installs_no_saved_tensor_hooks() -> None:
    """Tuning trials switch the meter off: no hooks on the hot path, and no figure is reported."""
    import localearn

    kw = {"arch": "mlp:1x32", "epochs": 1, "seed": 0, "progress": False}
    on = localearn.fit("mono_forward", "digits", **kw)["metrics"]
    off = localearn.fit("mono_forward", "digits", measure_memory=False, **kw)["metrics"]
    assert on["peak_saved_activation_bytes"] > 0
    assert off["peak_saved_activation_bytes"] is None
    assert off["test_accuracy"] == on["test_accuracy"]  # the meter only watches
