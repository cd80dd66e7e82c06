"""Mono-Forward vs backprop on MNIST, in one run: accuracy, train-time ratio, saved-bytes ratio.

    python benchmarks/bench_mono_forward.py --data-dir ../shared/data            # 2x1000, 5 epochs
    python benchmarks/bench_mono_forward.py --arch mlp:4x1000 --epochs 1         # memory series

Both arms use the same trunk, batch, seed and stopping rule (STUDY_PROTOCOL.md Rule 1); times
come from the same process on the same machine, so only their ratio is meaningful. Results are
printed and written to ``benchmarks/results/mono_forward_<arch>_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import localearn
from localearn.measure import write_result
from localearn.utils import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="mlp:2x1000")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()

    rows = {}
    for algo in ("mono_forward", "backprop"):
        r = localearn.fit(algo, args.dataset, arch=args.arch, data_dir=args.data_dir, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, device=args.device, progress=False)
        m = r["metrics"]
        rows[algo] = {k: m[k] for k in ("test_accuracy", "val_accuracy", "train_seconds", "samples_per_second",
                                          "data_passes", "peak_saved_activation_bytes", "peak_rss_bytes",
                                          "cuda_peak_allocated_bytes")}
        rows[algo]["units"] = r["units"]
        print(f"{algo:>13}: test acc {m['test_accuracy']:.4f}  train {m['train_seconds']:.1f} s  "
              f"passes {m['data_passes']}  saved {m['peak_saved_activation_bytes'] / 2**20:.2f} MiB")
    mf, bp = rows["mono_forward"], rows["backprop"]
    ratios = {
        "train_time_mf_over_bp": mf["train_seconds"] / bp["train_seconds"],
        "time_per_pass_mf_over_bp": (mf["train_seconds"] / mf["data_passes"])
        / (bp["train_seconds"] / bp["data_passes"]),
        "peak_saved_bytes_mf_over_bp": mf["peak_saved_activation_bytes"] / bp["peak_saved_activation_bytes"],
    }
    for k, v in ratios.items():
        print(f"{k:>30}: {v:.3f}")
    device = resolve_device(args.device)
    name = f"mono_forward_{args.arch.replace(':', '-')}_{device.type}_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_mono_forward", device, args=vars(args), arms=rows, ratios=ratios)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
