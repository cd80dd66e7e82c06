"""Forward-Forward per-label evaluation: layer 1 once for all labels vs once per label, one run.

    python benchmarks/bench_ff_eval.py --data-dir ../shared/data --threads 1

Hinton, *The Forward-Forward Algorithm*, arXiv 2212.13345 (docs/learners/forward_forward.md#prediction): per-label
prediction runs the network on C copies of each image, one per candidate label. Layer 1's RMS
divisor is the same for every label (the label contributes v² to the squared norm whichever
class it names), so its pre-activation is ``(W x')/s + (v/s)·W[:, c] + b``: the image part is
computed once (``ops.first_layer_per_label``). Both paths run ``learner.predict``'s computation
on the same images and weights, interleaved ``--repeats`` times; the ratio of the medians is
printed and written to ``benchmarks/results/ff_eval_<arch>_<device>_<date>.json`` with the
largest score difference and the prediction agreement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path

import torch

from localearn.data import load_dataset
from localearn.measure import write_result
from localearn.registry import create_learner
from localearn.utils import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="mlp:3x1000")
    p.add_argument("--samples", type=int, default=2000, help="test images scored per timed pass")
    p.add_argument("--batch-size", type=int, default=200, help="evaluation batch (the trainer uses 2x training)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir)
    learner = create_learner("forward_forward", arch=args.arch, input_shape=data.input_shape,
                             num_classes=data.num_classes).to(device).eval()
    batches, seen = [], 0
    for x, _ in data.eval_batches("test", args.batch_size):
        batches.append(x.to(device))
        seen += len(x)
        if seen >= args.samples:
            break
    layers = learner.read_layers

    def score(share: bool) -> torch.Tensor:
        out = [torch.stack([g[i] for i in layers]).sum(0) for g in
               (learner._per_label_goodness(x, share_first=share) for x in batches)]
        return torch.cat(out)

    times: dict[str, list[float]] = {"once_per_label": [], "shared_first_layer": []}
    with torch.no_grad():
        ref, new = score(False), score(True)  # also a warm-up of both paths
        for _ in range(args.repeats):
            for name, share in (("once_per_label", False), ("shared_first_layer", True)):
                t0 = time.perf_counter()
                score(share)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["shared_first_layer"] / med["once_per_label"]
    agree = float((ref.argmax(1) == new.argmax(1)).float().mean())
    max_rel = float((ref - new).abs().max() / ref.abs().max())
    print(f"per-label scoring of {seen} images, {args.arch}: once per label {med['once_per_label']:.3f} s, "
          f"layer 1 shared {med['shared_first_layer']:.3f} s -> ratio {ratio:.3f} "
          f"({1 - ratio:.1%} saved); predictions agree {agree:.4f}, max rel. score diff {max_rel:.2e}")
    name = f"ff_eval_{args.arch.replace(':', '-')}_{device.type}_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_ff_eval", device, args=vars(args), samples=seen,
                        seconds=times, median_seconds=med, ratio_shared_over_once=ratio,
                        prediction_agreement=agree, max_relative_score_difference=max_rel)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
