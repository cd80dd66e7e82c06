"""Fused FF and Mono-Forward layer steps: torch eager vs torch.compile vs Triton, forward + backward.

    python benchmarks/bench_kernels.py --device cuda --impl torch,compile,triton          # GPU grid
    python benchmarks/bench_kernels.py --device cpu --impl torch,compile --quick --threads 1

One step = the layer's forward, its local loss and the gradients of its parameters (W, b; and M
for Mono-Forward), on a detached input, as ``FFLayer``/``MonoForwardLayer.forward_loss`` run it.
FF: R rows (half positive) of width K = N = ``width``, sum goodness, straight-through ReLU and
peer normalisation (the reference recipe). MF: B rows, K = D = ``width``, C = 10 classes.

Reported per shape and arm: median seconds of ``repeats`` steps after warm-up (CUDA events on a
GPU, ``perf_counter`` on the CPU; the arms interleaved step by step), the ratio to eager, peak
memory and the fraction of the matmul roofline. Peak memory: on CUDA ``max_memory_allocated``
above the inputs after a reset; on the CPU the peak bytes autograd saved for backward
(``localearn.measure.SavedTensorMeter``), since the CPU allocator has no peak counter. Roofline:
the step's matmul FLOPs (FF 4·R·K·N; MF 4·B·K·D + 6·B·D·C) divided by its time, as a fraction of
the FLOP/s of one plain ``torch.mm`` of the same (rows × K × N) shape and dtype, timed in the same
interleaved loop. Writes ``benchmarks/results/kernels_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from localearn.kernels import compiled
from localearn.kernels.ff_layer import ff_layer, ff_layer_ref
from localearn.kernels.mono_forward_layer import mono_forward_layer, mono_forward_layer_ref

from localearn.measure import SavedTensorMeter, write_result

CLASSES = 10


def _timer(device: torch.device) -> Callable[[Callable[[], None], int], list[float]]:
    def run(fn: Callable[[], None], repeats: int) -> list[float]:
        out = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                out.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return out

    return run


def _steps(op: str, rows: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[dict[str, Any], float]:
    """Step closures for each arm, and the step's matmul FLOPs."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(rows, width, generator=g).to(device, dtype)
    w = (torch.randn(width, width, generator=g) / width**0.5).to(device, dtype).requires_grad_()
    b = torch.zeros(width, device=device, dtype=dtype, requires_grad=True)
    if op == "ff":
        pos = torch.arange(rows, device=device) < rows // 2
        running = torch.full((width,), 0.5, device=device, dtype=dtype)
        kw = dict(goodness="sum", straight_through=True, peer_norm=0.03, running_mean=running, peer_momentum=0.9)

        def ff(fn: Callable[..., Any], **extra: Any) -> Callable[[], None]:
            return lambda: torch.autograd.backward(fn(x, w, b, pos, float(width), **kw, **extra)[1], inputs=[w, b])

        arms = {"torch": ff(ff_layer_ref), "compile": ff(compiled(ff_layer_ref)), "triton": ff(ff_layer, impl="triton")}
        return arms, 4.0 * rows * width * width
    m = (torch.randn(CLASSES, width, generator=g) / width**0.5).to(device, dtype).requires_grad_()
    y = torch.randint(0, CLASSES, (rows,), generator=g).to(device)

    def mf(fn: Callable[..., Any], **extra: Any) -> Callable[[], None]:
        return lambda: torch.autograd.backward(fn(x, w, b, m, y, **extra)[1], inputs=[w, b, m])

    arms = {"torch": mf(mono_forward_layer_ref), "compile": mf(compiled(mono_forward_layer_ref)),
            "triton": mf(mono_forward_layer, impl="triton")}
    return arms, 4.0 * rows * width * width + 6.0 * rows * width * CLASSES


def _peak(fn: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    with SavedTensorMeter() as meter:
        fn()
    return int(meter.peak_bytes)


def bench_shape(op: str, rows: int, width: int, impls: list[str], device: torch.device, dtype: torch.dtype,
                repeats: int, warmup: int) -> dict[str, Any]:
    timer = _timer(device)
    arms, flops = _steps(op, rows, width, device, dtype)
    a = torch.randn(rows, width, device=device, dtype=dtype)
    bmat = torch.randn(width, width, device=device, dtype=dtype)

    def mm() -> None:
        torch.mm(a, bmat)

    fns: dict[str, Callable[[], None]] = {"mm": mm, **{impl: arms[impl] for impl in impls}}
    warm: dict[str, float] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        timer(fn, warmup)  # compile and autotune happen here
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved, so load changes on a shared machine hit every arm alike
        for name, fn in fns.items():
            times[name] += timer(fn, 1)
    mm_flops_per_s = 2.0 * rows * width * width / statistics.median(times["mm"])
    out: dict[str, Any] = {"op": op, "rows": rows, "width": width, "dtype": str(dtype).replace("torch.", ""),
                           "matmul_flops": flops, "plain_mm_flops_per_s": mm_flops_per_s, "arms": {}}
    for impl in impls:
        sec = statistics.median(times[impl])
        out["arms"][impl] = {"seconds": sec, "times": times[impl], "warmup_seconds": warm[impl],
                             "peak_bytes": _peak(arms[impl], device), "roofline_fraction": flops / sec / mm_flops_per_s}
    eager = out["arms"].get("torch")
    for r in out["arms"].values():
        r["speedup_vs_eager"] = eager["seconds"] / r["seconds"] if eager else None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--impl", default="torch,compile,triton", help="comma list of torch, compile, triton")
    p.add_argument("--ops", default="ff,mf")
    p.add_argument("--batches", default="128,512,1024,4096")
    p.add_argument("--widths", default="1000,2000,4096")
    p.add_argument("--quick", action="store_true", help="the CPU grid: batches 128,512,1024 x widths 1000,2000")
    p.add_argument("--dtype", default="float32", help="comma list: float32, bfloat16, float16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batches, args.widths = "128,512,1024", "1000,2000"
    device = torch.device(args.device)
    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    if "triton" in impls and device.type != "cuda":
        raise SystemExit("error: --impl triton needs --device cuda (the CPU interpreter is for tests, not timing)")
    results = []
    for dtype_name in args.dtype.split(","):
        dtype = getattr(torch, dtype_name.strip())
        for op in args.ops.split(","):
            for rows in map(int, args.batches.split(",")):
                for width in map(int, args.widths.split(",")):
                    r = bench_shape(op, rows, width, impls, device, dtype, args.repeats, args.warmup)
                    results.append(r)
                    line = "  ".join(f"{k} {v['seconds'] * 1e3:8.2f} ms x{v['speedup_vs_eager']:.2f} "
                                     f"roof {v['roofline_fraction']:.2f} peak {v['peak_bytes'] / 2**20:.2f} MiB"
                                     for k, v in r["arms"].items())
                    print(f"{op} {dtype_name} B={rows:5d} W={width:5d}  {line}", flush=True)
    tag = torch.cuda.get_device_name().replace(" ", "_") if device.type == "cuda" else "cpu"
    memory = "cuda_max_memory_allocated" if device.type == "cuda" else "saved_for_backward_bytes"
    path = write_result(Path(args.out) / f"kernels_{tag}_{dt.date.today().isoformat()}.json", "bench_kernels",
                        device, args=vars(args), memory_method=memory, results=results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
