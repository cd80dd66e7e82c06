"""The accelerated step on a GPU: epoch time with the data on the device, and host syncs per step.

    python benchmarks/bench_step.py --data-dir .gpu_data --device cuda

Arms (each a real ``localearn.fit`` on MNIST ``mlp:4x1000``, batch 128, one epoch): Mono-Forward
(Gong et al., arXiv 2501.09238; joint schedule) and backprop, each with the dataset held on the
device (``--data-on-device on``: shuffled there, in the CPU's seeded order) and on the host
(``off``: a copy per batch). Reported: training seconds of the epoch (the metered windows) and the
ratio on/off. Then the host syncs: the CUDA synchronisations counted by
``torch.cuda.set_sync_debug_mode("warn")`` (each one is a warning) during a run of N batches and of
3N, for each learner; the difference is the syncs that grow with the steps, which the accelerated
step keeps at zero (docs/guides/precision.md). Results go to
``benchmarks/results/step_<arch>_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.data import load_dataset
from localearn.data.base import ImageData
from localearn.measure import write_result


def epoch(algo: str, on_device: str, args: argparse.Namespace) -> dict[str, Any]:
    r = localearn.fit(algo, "mnist", arch=args.arch, schedule="joint" if algo == "mono_forward" else None,
                      data_dir=args.data_dir, epochs=1, batch_size=args.batch_size, device=args.device,
                      data_on_device=on_device, progress=False)
    return {"train_seconds": r["metrics"]["train_seconds"], "test_accuracy": r["metrics"]["test_accuracy"]}


def syncs(algo: str, batches: int, args: argparse.Namespace) -> int:
    """CUDA synchronisations in a one-epoch run of ``batches`` training batches."""
    full = load_dataset("mnist", args.data_dir)
    assert isinstance(full, ImageData)
    n = batches * args.batch_size
    data = ImageData("mnist_head", full.input_shape, full.num_classes, x_train=full.x_train[:n],
                     y_train=full.y_train[:n], x_val=full.x_val[:1024], y_val=full.y_val[:1024],
                     x_test=full.x_test[:1024], y_test=full.y_test[:1024])
    seen = 0
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learner = localearn.create_learner(algo, arch=args.arch, input_shape=data.input_shape,
                                               num_classes=data.num_classes,
                                               **({"schedule": "joint"} if algo == "mono_forward" else {}))
            config = localearn.TrainConfig(epochs=1, batch_size=args.batch_size, device=args.device, progress=False)
            localearn.Trainer(learner, data, config).fit()
            seen = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".gpu_data")
    p.add_argument("--arch", default="mlp:4x1000")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20, help="N of the N vs 3N sync count")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    results: dict[str, Any] = {}
    for algo in ("mono_forward", "backprop"):
        arms = {mode: epoch(algo, mode, args) for mode in ("off", "on")}
        ratio = arms["off"]["train_seconds"] / arms["on"]["train_seconds"]
        n, three_n = syncs(algo, args.steps, args), syncs(algo, 3 * args.steps, args)
        results[algo] = {"epoch": arms, "speedup_data_on_device": ratio,
                         "syncs": {f"{args.steps}_steps": n, f"{3 * args.steps}_steps": three_n,
                                   "per_step": (three_n - n) / (2 * args.steps)}}
        print(f"{algo}: epoch {arms['off']['train_seconds']:.2f} s host data, {arms['on']['train_seconds']:.2f} s "
              f"device data ({ratio:.2f}x); syncs {n} / {three_n} for {args.steps} / {3 * args.steps} steps",
              flush=True)
    device = torch.device(args.device)
    name = f"step_{args.arch.replace(':', '-')}_{device.type}_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_step", device, setup=vars(args), results=results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
