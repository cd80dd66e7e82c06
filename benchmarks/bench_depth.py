"""Depth series: a local learner's peak saved-for-backward bytes stay flat as the network deepens,
backprop's grow; and the accuracy cost of cutting one model into more blocks. One run, one JSON.

    python benchmarks/bench_depth.py --data-dir ../shared/data --batches 2 --epochs 2

Belilovsky, Eickenberg & Oyallon, *Decoupled Greedy Learning of CNNs*, ICML 2020 (DGL's memory
argument: a module's graph is freed before the next module runs). Part 1 (memory): torchvision
ResNet-18, -34 and -50 with the CIFAR stem on 32x32 CIFAR-10 batches, each cut into one block per
residual block (every cut point an automatic split may use, so a module is one residual block at
every depth) and into 4 blocks balanced by activation memory; DGL takes ``--batches`` training
steps under the saved-tensor meter, backprop the same steps through the unmodified model, and the
ratio DGL/backprop is taken within this run. Part 2 (accuracy): ResNet-18 on ``cifar10_subset``
without augmentation, DGL with K = 2, 4 and 8 blocks against backprop, ``--epochs`` epochs each
(short runs: the cost of more blocks, not converged accuracy). Results go to
``benchmarks/results/depth_resnet_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.learner import LocalLearner
from localearn.measure import SavedTensorMeter, write_result
from localearn.models import load_model
from localearn.models.points import analyse
from localearn.trainer import make_optimizer_factory

SHAPE = (3, 32, 32)


def peak_bytes(learner: LocalLearner, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The peak live bytes autograd saves while ``learner`` steps on ``batches``."""
    learner.configure_optimizers(make_optimizer_factory("sgd", 0.01, 0.0))
    learner.train()
    meter = SavedTensorMeter(list(learner.parameters()))
    stage = learner.stages()[0]
    with meter:
        for batch in batches:
            learner.train_step(batch, stage)
    return meter.peak_bytes


def memory_row(name: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    source = f"torchvision:{name}"
    units = len(analyse(load_model(source, 10, SHAPE), SHAPE).units) + 1
    row: dict[str, Any] = {"model": name, "parameters": sum(p.numel() for p in load_model(source, 10, SHAPE)
                                                            .parameters())}
    for key, algo, blocks in (("backprop", "backprop", None), ("dgl_per_block", "dgl", units), ("dgl_4", "dgl", 4)):
        torch.manual_seed(0)
        learner = localearn.localize(source, algo, input_shape=SHAPE, num_classes=10, blocks=blocks)
        row[key] = {"blocks": blocks, "peak_saved_bytes": peak_bytes(learner, batches)}
        print(f"{name:>9} {key:>13}: {row[key]['peak_saved_bytes'] / 2**20:8.1f} MiB"
              + (f" ({blocks} blocks)" if blocks else ""), flush=True)
    for key in ("dgl_per_block", "dgl_4"):
        row[key]["ratio_to_backprop"] = row[key]["peak_saved_bytes"] / row["backprop"]["peak_saved_bytes"]
    return row


def accuracy_row(algo: str, blocks: int | None, args: argparse.Namespace) -> dict[str, Any]:
    r = localearn.fit(algo, "cifar10_subset", model="torchvision:resnet18", blocks=blocks, data_dir=args.data_dir,
                      dataset_options={"augment": False}, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, device=args.device, progress=False)
    m = r["metrics"]
    row = {"algo": algo, "blocks": blocks, "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
           "peak_saved_bytes": m["peak_saved_activation_bytes"], "optimizer": r["config"]["optimizer_resolved"],
           "per_block_test_accuracy": {k: v.get("test_accuracy") for k, v in m["per_layer"].items()}}
    print(f"resnet18 {algo} K={blocks}: test acc {row['test_accuracy']:.4f}, "
          f"peak saved {row['peak_saved_bytes'] / 2**20:.1f} MiB, train {row['train_seconds']:.0f} s", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--models", default="resnet18,resnet34,resnet50")
    p.add_argument("--batches", type=int, default=2, help="training steps per memory measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="epochs per accuracy run (0: skip part 2)")
    p.add_argument("--blocks", default="2,4,8", help="block counts of the accuracy runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = localearn.load_dataset("cifar10_subset", args.data_dir, augment=False)
    # copies, not views: a view's saved input would count the whole training tensor's storage
    batches = [(data.x_train[i * args.batch_size:(i + 1) * args.batch_size].clone(),  # type: ignore[attr-defined]
                data.y_train[i * args.batch_size:(i + 1) * args.batch_size].clone()) for i in range(args.batches)]
    memory = [memory_row(name, batches) for name in args.models.split(",")]
    accuracy = []
    if args.epochs > 0:
        accuracy = [accuracy_row("backprop", None, args)]
        accuracy += [accuracy_row("dgl", int(k), args) for k in args.blocks.split(",")]
    device = torch.device(args.device)
    out = write_result(Path(args.out) / f"depth_resnet_{device.type}_{dt.date.today().isoformat()}.json",
                       "bench_depth", device, args=vars(args), memory=memory, accuracy=accuracy)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
