"""ForwardGNN vs backprop on Cora: node accuracy, link ROC-AUC and saved bytes over depth, one run.

    python benchmarks/bench_forward_gnn.py --data-dir ../shared/data          # full acceptance run
    python benchmarks/bench_forward_gnn.py --skip-link --max-depth 2          # quicker

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004.
Node classification: ``forward_gnn`` (variant ``sf``, greedy, per-layer early stopping and restore)
and ``backprop_gnn`` (PyG GCN) on the public Planetoid split, both ``gcn:128x2``, same seed, same
stopping rule (``--epochs`` cap per unit, ``--patience``). Link prediction: the same two learners
as Trainer runs with ``task="link"`` (``dot`` objective; see
:mod:`localearn.algorithms.forward_gnn.link`). Memory: peak bytes saved for backward (autograd
hooks) for 1..``--max-depth`` layers of 128, a few epochs each (the per-step peak does not depend
on how long a run trains). Results are printed and written to ``benchmarks/results/forward_gnn_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.measure import device_info, versions
from localearn.utils import resolve_device

KEYS = ("test_accuracy", "val_accuracy", "train_seconds", "data_passes", "epochs", "peak_saved_activation_bytes")


def node_run(algo: str, args: argparse.Namespace, arch: str, epochs: int, patience: int) -> dict[str, Any]:
    r = localearn.fit(algo, args.dataset, arch=arch, data_dir=args.data_dir, epochs=epochs, patience=patience,
                      seed=args.seed, device=args.device, progress=False)
    m = r["metrics"]
    row: dict[str, Any] = {k: m[k] for k in KEYS}
    row["units"] = r["units"]
    row["per_layer"] = m["per_layer"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="cora")
    p.add_argument("--arch", default="gcn:128x2")
    p.add_argument("--epochs", type=int, default=200, help="cap per training unit")
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--link-epochs", type=int, default=300)
    p.add_argument("--max-depth", type=int, default=4)
    p.add_argument("--memory-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-link", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    node = {}
    for algo in ("forward_gnn", "backprop_gnn"):
        node[algo] = row = node_run(algo, args, args.arch, args.epochs, args.patience)
        print(f"node {algo:>13} {args.arch}: test acc {row['test_accuracy']:.4f}  val acc {row['val_accuracy']:.4f}  "
              f"epochs {row['epochs']}  train {row['train_seconds']:.1f} s", flush=True)

    link = {}
    if not args.skip_link:
        for algo in ("forward_gnn", "backprop_gnn"):
            r = localearn.fit(algo, args.dataset, arch=args.arch, data_dir=args.data_dir, task="link",
                              epochs=args.link_epochs, patience=args.patience, seed=args.seed,
                              device=args.device, progress=False)
            m = r["metrics"]
            link[algo] = {"test_auc": m["test_roc_auc"], "val_auc": m["val_roc_auc"], "units": r["units"],
                          "train_seconds": m["train_seconds"],
                          "peak_saved_activation_bytes": m["peak_saved_activation_bytes"]}
            print(f"link {algo:>13} {args.arch}: test ROC-AUC {m['test_roc_auc']:.4f}  val {m['val_roc_auc']:.4f}  "
                  f"units {[(u['unit'], u['epochs'], u['best_epoch']) for u in r['units']]}", flush=True)

    memory: dict[str, list[int]] = {"forward_gnn": [], "backprop_gnn": []}
    kind, width = args.arch.split(":")[0], args.arch.split(":")[1].split("x")[0]
    for depth in range(1, args.max_depth + 1):
        for algo in memory:
            row = node_run(algo, args, f"{kind}:{width}x{depth}", args.memory_epochs, args.memory_epochs)
            memory[algo].append(int(row["peak_saved_activation_bytes"]))
    ratios = {algo: [b / s[0] for b in s] for algo, s in memory.items()}
    for algo, series in memory.items():
        print(f"peak saved bytes {algo:>13} depth 1..{args.max_depth}: "
              + ", ".join(f"{b / 2**20:.2f} MiB" for b in series)
              + "   ratio to depth 1: " + ", ".join(f"{r:.3f}" for r in ratios[algo]), flush=True)

    device = resolve_device(args.device)
    record = {"benchmark": "bench_forward_gnn", "args": vars(args), "date": dt.date.today().isoformat(),
              "device": device_info(device), "versions": versions(), "node": node, "link": link,
              "memory_peak_saved_bytes": memory, "memory_ratio_to_depth1": ratios,
              "wall_seconds": time.perf_counter() - t_start}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"forward_gnn_{device.type}_{record['date']}.json").write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
