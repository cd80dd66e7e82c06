"""Plain Forward-Forward against Collaborative FF on the same data, architecture and seeds.

Hinton, *The Forward-Forward Algorithm*, arXiv 2212.13345; Lorberbom et al., *Layer
Collaboration in the Forward-Forward Algorithm*, arXiv 2305.12393. Every arm uses the learner's
defaults (SGD m 0.9, per-label prediction, peer normalisation, straight-through ReLU, cool-down)
and stops on validation accuracy; only ``collab`` differs.

Example (the issue's acceptance setting)::

    OMP_NUM_THREADS=2 python benchmarks/bench_forward_forward.py --dataset mnist \\
        --data-dir ../shared/data --arch mlp:3x1000 --epochs 20 --seeds 0 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.measure import write_result


def run_arm(collab: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One training run; returns the numbers the table prints."""
    start = time.perf_counter()
    r = localearn.fit(
        "forward_forward", args.dataset, arch=args.arch, data_dir=args.data_dir,
        learner_options={"collab": collab, **json.loads(args.options)},
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
        device=args.device, progress=args.progress,
        out=Path(args.out) / f"{collab}-seed{seed}" if args.out else None,
    )
    m = r["metrics"]
    return {
        "collab": collab, "seed": seed, "test_accuracy": m["test_accuracy"],
        "val_accuracy": m["val_accuracy"], "epochs": m["epochs"],
        "best_epoch": r["units"][0]["best_epoch"], "train_seconds": m["train_seconds"],
        "s_per_epoch": m["train_seconds"] / max(m["epochs"], 1),
        "validate_seconds": m["validate_seconds"], "wall_seconds": time.perf_counter() - start,
        "per_layer": {k: v.get("test_accuracy") for k, v in m["per_layer"].items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--arch", default="mlp:2x256")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="layer lr (default: the learner's)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, shared by all arms")
    p.add_argument("--collab", default="none,preceding,all", help="arms to run")
    p.add_argument("--options", default="{}", help="extra learner options as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="keep each run's directory here")
    p.add_argument("--json", default=None, help="write the raw rows to this file")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for collab in args.collab.split(","):
            row = run_arm(collab.strip(), seed, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.dataset} {args.arch}, cap {args.epochs} epochs, batch {args.batch_size}, "
          f"seeds {seeds}, {args.threads} thread(s), device {args.device}")
    print(f"{'collab':<10} {'test acc (mean ± sd)':<22} {'epochs':>7} {'s/epoch':>9} {'train s':>9}")
    for collab in args.collab.split(","):
        sel = [r for r in rows if r["collab"] == collab.strip()]
        accs = [r["test_accuracy"] for r in sel]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{collab:<10} {statistics.mean(accs):.4f} ± {sd:.4f}{'':<8} "
              f"{statistics.mean(r['epochs'] for r in sel):>7.1f} "
              f"{statistics.mean(r['s_per_epoch'] for r in sel):>9.1f} "
              f"{statistics.mean(r['train_seconds'] for r in sel):>9.1f}")
    if args.json:
        write_result(args.json, "bench_forward_forward", args.device, args=vars(args), rows=rows)


if __name__ == "__main__":
    main()
