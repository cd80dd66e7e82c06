"""Fused linear + cross-entropy: torch eager vs torch.compile vs Triton, forward + backward.

    python benchmarks/bench_linear_cross_entropy.py --rows 4096 --dim 2000 --classes 10

Needs a CUDA GPU (the Triton path runs on CPU only through the slow interpreter, which is for
testing, not timing). Prints median milliseconds per forward+backward, each path's ratio to eager,
the peak allocated bytes of each, and writes ``benchmarks/results/linear_cross_entropy_<gpu>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from localearn.kernels.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref

from localearn.measure import write_result


def _time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, int]:
    for _ in range(3):
        fn().backward()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn().backward()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2], int(torch.cuda.max_memory_allocated())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--dim", type=int, default=2000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_linear_cross_entropy needs a CUDA GPU; no timing was taken")
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.rows, args.dim, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(args.classes, args.dim, device="cuda", dtype=dtype, requires_grad=True)
    y = torch.randint(0, args.classes, (args.rows,), device="cuda")
    compiled = torch.compile(linear_cross_entropy_ref)
    paths = {
        "eager": lambda: linear_cross_entropy_ref(x, w, y),
        "compile": lambda: compiled(x, w, y),
        "triton": lambda: linear_cross_entropy(x, w, y, impl="triton"),
    }
    rows = {name: dict(zip(("ms", "peak_bytes"), _time(fn, args.repeats), strict=True)) for name, fn in paths.items()}
    for name, r in rows.items():
        r["ratio_to_eager"] = r["ms"] / rows["eager"]["ms"]
        mib = r["peak_bytes"] / 2**20
        print(f"{name:>8}: {r['ms']:.3f} ms  ({r['ratio_to_eager']:.2f}x eager)  peak {mib:.1f} MiB")
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    name = f"linear_cross_entropy_{gpu}_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_linear_cross_entropy", "cuda", args=vars(args), paths=rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
