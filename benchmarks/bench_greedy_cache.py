"""Greedy Mono-Forward with and without the frozen-prefix cache, against backprop, in one run.

    python benchmarks/bench_greedy_cache.py --data-dir ../shared/data --arch mlp:3x1000 --epochs 2

Gong, Li & Abdulla, *Mono-Forward*, arXiv 2501.09238 (greedy schedule as Beyond-BP). A greedy
run recomputes the frozen prefix every batch (O(L²) layer forwards over the units); with
``prefix_cache_gb`` the prefix's output is memoised once per unit by row content (no
augmentation on MNIST). Three arms, same data, seed and batch: ``bp`` (backprop, ``epochs`` per
unit = ``epochs`` in total), ``mf`` (greedy, recompute) and ``mf_cache`` (greedy, cached). Each
arm reports its test accuracy, metered training seconds and the training seconds at which its
model's validation accuracy first reached ``--target`` (time to accuracy). Ratios are taken
within this run. Results go to ``benchmarks/results/greedy_cache_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn import Callback, Trainer
from localearn.measure import device_info, versions


class _Clock(Callback):
    """Cumulative metered training seconds and validation accuracy after every epoch."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def on_epoch_end(self, trainer: Trainer, stage: object, record: dict[str, Any]) -> None:
        self.points.append((trainer.meter.total("warmup", "train"), record["val_accuracy"]))


def arm(algo: str, args: argparse.Namespace, cache_gb: float) -> dict[str, Any]:
    clock = _Clock()
    r = localearn.fit(algo, "mnist", arch=args.arch, data_dir=args.data_dir, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, device=args.device, progress=False,
                      prefix_cache_gb=cache_gb, callbacks=[clock])
    reached = [t for t, acc in clock.points if acc >= args.target]
    m = r["metrics"]
    return {"status": r["status"], "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
            "data_passes": m["data_passes"], "seconds_to_target": reached[0] if reached else None,
            "curve": clock.points}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--arch", default="mlp:3x1000")
    p.add_argument("--epochs", type=int, default=2, help="epochs per training unit")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--target", type=float, default=0.97, help="validation accuracy for time-to-accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = {"bp": arm("backprop", args, 0.0), "mf": arm("mono_forward", args, 0.0),
            "mf_cache": arm("mono_forward", args, 4.0)}
    for name, row in rows.items():
        print(f"{name:>9}: test acc {row['test_accuracy']:.4f}  train {row['train_seconds']:.1f} s  "
              f"to val acc {args.target}: {row['seconds_to_target']} s  ({row['data_passes']} passes)", flush=True)
    ratios = {k: rows[k]["train_seconds"] / rows["bp"]["train_seconds"] for k in ("mf", "mf_cache")}
    print(f"train time vs BP: recompute {ratios['mf']:.2f}x, cached {ratios['mf_cache']:.2f}x; "
          f"cache speed-up {rows['mf']['train_seconds'] / rows['mf_cache']['train_seconds']:.2f}x", flush=True)
    device = torch.device(args.device)
    record = {"benchmark": "bench_greedy_cache", "args": vars(args), "date": dt.date.today().isoformat(),
              "device": device_info(device), "versions": versions(), "arms": rows, "ratios_to_bp": ratios}
    out = Path(args.out) / f"greedy_cache_{device.type}_{record['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
