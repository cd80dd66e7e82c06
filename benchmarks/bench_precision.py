"""fp32 against bf16 (and fp16 on CUDA) autocast, for Mono-Forward and backprop, in one run.

    python benchmarks/bench_precision.py --data-dir ../shared/data --epochs 2 --repeats 2

Arms: Mono-Forward (Gong et al., arXiv 2501.09238; joint schedule) and backprop on MNIST
``mlp:4x1000``, batch 128, each a real ``localearn.fit`` run at ``--precision fp32`` and ``bf16``
(and ``fp16`` with ``--device cuda``). Throughput is training samples per second of the metered
training windows (validation and test are metered apart); accuracy is the test accuracy of the
complete run. Repeats are interleaved (fp32, bf16, fp32, bf16, ...) so that load on a shared
machine hits every arm alike, and the ratio of the median throughputs is reported against the
same learner's fp32 arm, with the test accuracy difference in points. Provenance records the
CPU's flags (AVX512-BF16 / AMX decide what bf16 buys on a CPU) or the GPU. Results go to
``benchmarks/results/precision_<arch>_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.measure import write_result


def cpu_flags() -> list[str]:
    """The CPU flags that matter for reduced precision (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "avx512_fp16", "amx", "avx512f", "avx2", "fma")))


def run(algo: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    r = localearn.fit(algo, args.dataset, arch=args.arch, schedule="joint" if algo == "mono_forward" else None,
                      data_dir=args.data_dir, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, device=args.device, precision=precision, progress=False)
    m = r["metrics"]
    return {"samples_per_second": m["samples_per_second"], "train_seconds": m["train_seconds"],
            "test_accuracy": m["test_accuracy"], "steps": m["steps"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="mlp:4x1000")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--algos", default="mono_forward,backprop")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    precisions = ["fp32", "bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {a: {pr: [] for pr in precisions}
                                                        for a in args.algos.split(",")}
    for rep in range(args.repeats):
        for algo, arms in rows.items():
            for precision in precisions if rep % 2 == 0 else precisions[::-1]:  # interleaved, alternating
                arms[precision].append(run(algo, precision, args))
                last = arms[precision][-1]
                print(f"{algo:>13} {precision} rep {rep}: {last['samples_per_second']:.0f} samples/s, "
                      f"test accuracy {last['test_accuracy']:.4f}", flush=True)
    summary: dict[str, Any] = {}
    for algo, arms in rows.items():
        base = statistics.median(r["samples_per_second"] for r in arms["fp32"])
        base_acc = statistics.median(r["test_accuracy"] for r in arms["fp32"])
        summary[algo] = {}
        for pr, runs in arms.items():
            speed = statistics.median(r["samples_per_second"] for r in runs)
            acc = statistics.median(r["test_accuracy"] for r in runs)
            summary[algo][pr] = {"median_samples_per_second": speed, "throughput_ratio_vs_fp32": speed / base,
                                 "test_accuracy": acc, "accuracy_delta_pp_vs_fp32": 100 * (acc - base_acc),
                                 "runs": runs}
        for pr in precisions[1:]:
            s = summary[algo][pr]
            print(f"{algo}: {pr} / fp32 throughput {s['throughput_ratio_vs_fp32']:.3f}x, "
                  f"accuracy {s['accuracy_delta_pp_vs_fp32']:+.2f} pp")
    device = torch.device(args.device)
    name = f"precision_{args.arch.replace(':', '-')}_{device.type}_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_precision", device,
                        command=" ".join(["python", "benchmarks/bench_precision.py", *__import__("sys").argv[1:]]),
                        cpu={"model": platform.processor() or platform.machine(), "flags": cpu_flags(),
                             "threads": torch.get_num_threads()},
                        setup={"dataset": args.dataset, "arch": args.arch, "epochs": args.epochs,
                               "batch_size": args.batch_size, "mono_forward_schedule": "joint", "seed": args.seed},
                        results=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
