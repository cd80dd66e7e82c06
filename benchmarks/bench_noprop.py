"""NoProp-DT (or -CT/-FM) on MNIST: accuracy, epochs, wall time, with optional size reductions.

Li, Teh & Pascanu, *NoProp*, arXiv 2503.24322 (ALGORITHMS.md §4). The paper's MNIST recipe is
T = 10, cnn:32-64-128, width 256/128, AdamW lr 1e-3 wd 1e-3, batch 128, 100 epochs; on a shared
CPU use the flags to shrink it, and report exactly what was run::

    python benchmarks/bench_noprop.py --data-dir ../shared/data --epochs 2 \\
        --arch cnn:16-32-64 --width 128 --hidden 64 --blocks-per-step all --threads 2

Prints one line per ``--log-every`` batches (elapsed seconds) and per epoch, then writes
``benchmarks/results/noprop_<arch>_<device>_<date>.json`` with the run's metrics.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.learner import Stage
from localearn.measure import write_result
from localearn.trainer import Callback, Trainer
from localearn.utils import resolve_device


class PrintProgress(Callback):
    """Flushes a line every ``every`` batches and at each epoch end (for ``nohup`` logs)."""

    def __init__(self, every: int) -> None:
        self.every, self.start, self.batches = every, time.perf_counter(), 0

    def on_batch_end(self, trainer: Trainer, stage: Stage, logs: dict[str, float]) -> None:
        self.batches += 1
        if self.batches % self.every == 0:
            print(f"[{time.perf_counter() - self.start:8.1f}s] {stage.name} batch {self.batches} "
                  f"loss {logs['loss']:.4f}", flush=True)

    def on_epoch_end(self, trainer: Trainer, stage: Stage, record: dict[str, Any]) -> None:
        print(f"[{time.perf_counter() - self.start:8.1f}s] {stage.name} epoch {record['epoch']} "
              f"val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="noprop", choices=("noprop", "noprop_ct", "noprop_fm"))
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="cnn:32-64-128")
    p.add_argument("--schedule", default=None)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding", default="onehot")
    p.add_argument("--inference", default="stochastic")
    p.add_argument("--blocks-per-step", default="one")
    p.add_argument("--steps", type=int, default=1000, help="CT/FM solver steps")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--run-dir", default=None, help="checkpoint/run.json directory")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.algo == "noprop":
        options: dict[str, Any] = {"T": args.T, "width": args.width, "hidden": args.hidden,
                                   "embedding": args.embedding, "inference": args.inference,
                                   "blocks_per_step": args.blocks_per_step}
    else:
        options = {"width": args.width, "hidden": args.hidden, "embedding": args.embedding, "steps": args.steps}
    start = time.perf_counter()
    r = localearn.fit(args.algo, args.dataset, arch=args.arch, schedule=args.schedule, data_dir=args.data_dir,
                      learner_options=options, epochs=args.epochs, patience=args.patience,
                      batch_size=args.batch_size, seed=args.seed, device=args.device, progress=False,
                      out=args.run_dir, callbacks=[PrintProgress(args.log_every)])
    wall = time.perf_counter() - start
    m = r["metrics"]
    keep = ("test_accuracy", "val_accuracy", "test_loss", "train_seconds", "validate_seconds", "test_seconds",
            "epochs", "data_passes", "steps", "samples_per_second", "peak_saved_activation_bytes", "peak_rss_bytes")
    row = {k: m[k] for k in keep}
    row["per_layer_test_accuracy"] = {k: v.get("test_accuracy") for k, v in m["per_layer"].items()}
    print(f"{args.algo}: test acc {m['test_accuracy']:.4f}  epochs {m['epochs']}  train {m['train_seconds']:.1f} s  "
          f"wall {wall:.1f} s  threads {torch.get_num_threads()}")
    device = resolve_device(args.device)
    date = dt.date.today().isoformat()
    name = f"{args.algo}_{args.arch.replace(':', '-')}_{args.inference}_{device.type}_{date}.json"
    path = write_result(Path(args.out) / name, "bench_noprop", device, args=vars(args), learner_options=options,
                        wall_seconds=wall, threads=torch.get_num_threads(), metrics=row, units=r["units"],
                        history=r["history"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
