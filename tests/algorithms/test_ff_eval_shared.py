"""FF per-label evaluation with layer 1's image part computed once (Hinton, arXiv 2212.13345)."""

from __future__ import annotations

import torch

from localearn.data import load_dataset
from localearn.registry import create_learner


def test_shared_first_layer_equals_the_direct_per_label_pass() -> None:
    """In float64 the two paths agree to rounding (1e-12 relative), for any label value and
    straight-through setting; in float32 on real digits the predictions are identical."""
    torch.manual_seed(0)
    for value, st in ((3.25, True), (1.0, False), (0.0, True)):
        ff = create_learner("ff", arch="mlp:3x64", input_shape=(1, 8, 8), num_classes=10, label_value=value,
                            straight_through=st).double().eval()
        with torch.no_grad():
            ff.ff_layers[0].linear.bias.normal_()  # a non-zero bias must be added once per row
            x = torch.randn(23, 1, 8, 8, dtype=torch.float64) * 2
            shared, direct = ff._per_label_goodness(x), ff._per_label_goodness(x, share_first=False)
        for a, b in zip(shared, direct, strict=True):
            assert a.shape == (23, 10)
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    data = load_dataset("digits")
    ff = create_learner("ff", arch="mlp:2x128", input_shape=data.input_shape, num_classes=data.num_classes).eval()
    x, _ = next(iter(data.eval_batches("test", 256)))
    with torch.no_grad():
        new = ff.predict(x)
        old = torch.stack([g for g in ff._per_label_goodness(x, share_first=False)[1:]]).sum(0)
    assert torch.equal(new.argmax(1), old.argmax(1))
    assert torch.allclose(new, old, rtol=1e-5)


def test_collaborative_ff_predicts_with_the_sum_it_was_trained_on() -> None:
    """CFF's logit is Σ over all layers (layer 1 included); plain FF keeps layer 1 out
    (docs/learners/forward_forward.md#pitfall-layer-one)."""
    x = torch.randn(9, 1, 8, 8)
    for collab, layers in (("none", (1, 2)), ("all", (0, 1, 2)), ("preceding", (0, 1, 2))):
        ff = create_learner("ff", arch="mlp:3x32", input_shape=(1, 8, 8), num_classes=10, collab=collab).eval()
        with torch.no_grad():
            g = ff._per_label_goodness(x)
            assert torch.allclose(ff.predict(x), sum(g[i] for i in layers))
