"""Collaborative FF diagnostics on saved runs: prediction with/without layer 1, logit offsets.

    localearn study run studies/ff_collab_mnist.toml
    python benchmarks/analyse_cff.py studies_out/ff-collab-mnist/runs/mnist/{ff,cff_all,cff_preceding}/seed-0

Lorberbom et al., *Layer Collaboration in the Forward-Forward Algorithm*, arXiv 2305.12393. For
each saved run directory named: per-label accuracy from layers 2..L and from all layers, each
layer's own accuracy, and how often each layer's logit G_l − θ_l is saturated (|logit| > 4.6) on
the true label (positive) and on the label (y + 1) mod C (negative), on 2 000 test images.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from localearn.run import load_run


def analyse(path: str) -> dict[str, Any]:
    learner, data, _ = load_run(path)  # the data folder the run recorded
    xs, ys, n = [], [], 0
    for x, y in data.eval_batches("test", 500):
        xs.append(x)
        ys.append(y)
        n += len(y)
        if n >= 2000:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        g = learner._per_label_goodness(x)  # type: ignore[operator]
    th = [layer.theta for layer in learner.ff_layers]  # type: ignore[attr-defined]

    def acc(s: torch.Tensor) -> float:
        return float((s.argmax(1) == y).float().mean())

    idx, wrong = torch.arange(len(y)), (y + 1) % g[0].shape[1]
    pos = [gi[idx, y] - t for gi, t in zip(g, th, strict=True)]
    neg = [gi[idx, wrong] - t for gi, t in zip(g, th, strict=True)]
    return {"acc_layers_2_L": acc(sum(g[1:])), "acc_all_layers": acc(sum(g)),
            "acc_per_layer": [acc(gi) for gi in g],
            "mean_abs_logit_per_layer_pos": [float(p.abs().mean()) for p in pos],
            "own_saturated_frac": [[float((p > 4.6).float().mean()), float((q < -4.6).float().mean())]
                                   for p, q in zip(pos, neg, strict=True)]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({path: analyse(path) for path in sys.argv[1:]}, indent=1))
