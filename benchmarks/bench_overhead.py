"""Framework overhead: one epoch of ``localearn train`` against a plain torch loop, one run.

    python benchmarks/bench_overhead.py --data-dir ../shared/data --threads 1

Arms: Mono-Forward (Gong et al., arXiv 2501.09238; joint schedule) and backprop on MNIST
``mlp:2x1000``, batch 128, one epoch. The framework time is ``train_seconds`` of
``localearn.fit`` (the metered warm-up + train windows: the batch loop with everything the trainer
does per batch, saved-tensor metering and progress bookkeeping included; validation and test are
metered apart and not counted). The plain loop does the same computation on the same batches with
nothing else: the same modules (shapes, initialisation seed), per-layer Adam (MF; each layer's
input detached, loss CE of ``a_i M_iᵀ``) or one AdamW (BP) at the same learning rate, and the
same shuffled order. Repeats are interleaved (framework, plain, plain, framework, ...) so that
load on a shared machine hits both. Two clocks: wall time, and the CPU time of the training thread
(``time.thread_time`` over the same windows; with ``--threads 1`` every op runs on that thread),
which other processes on a shared machine barely disturb. The ratios of medians are printed and
written to ``benchmarks/results/overhead_mlp-2x1000_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import localearn
from localearn.arch import build_trunk
from localearn.data import load_dataset
from localearn.measure import write_result
from localearn.utils import derive_seed, seed_everything


class ThreadTimeProbe:
    """CPU seconds of this thread over the trainer's ``warmup`` and ``train`` windows."""

    def __init__(self) -> None:
        self.seconds, self._t0 = 0.0, 0.0

    def start(self, phase: str) -> None:
        self._t0 = time.thread_time()

    def stop(self, phase: str) -> None:
        if phase in ("warmup", "train"):
            self.seconds += time.thread_time() - self._t0

    def report(self) -> dict[str, Any]:
        return {}


def plain_epoch(algo: str, x_train: torch.Tensor, y_train: torch.Tensor,
                args: argparse.Namespace) -> tuple[float, float]:
    """One epoch of the same computation in plain torch; returns its wall and CPU seconds."""
    seed_everything(args.seed)
    blocks, shapes = build_trunk(args.arch, tuple(x_train.shape[1:]))
    if algo == "backprop":
        head = nn.Linear(shapes[-1][0], 10)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        net = nn.Sequential(*blocks, head)
        opts = [torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)]
    else:
        projs = [nn.Linear(s[0], 10, bias=False) for s in shapes]
        opts = [torch.optim.Adam([*b.parameters(), *p.parameters()], lr=args.lr)
                for b, p in zip(blocks, projs, strict=True)]
    gen = torch.Generator().manual_seed(derive_seed(args.seed, "order", 0))
    n, bs = len(y_train), args.batch_size
    t0, c0 = time.perf_counter(), time.thread_time()
    perm = torch.randperm(n, generator=gen)
    for start in range(0, n - bs + 1, bs):
        idx = perm[start : start + bs]
        x, y = x_train[idx], y_train[idx]
        if algo == "backprop":
            opts[0].zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opts[0].step()
        else:
            h = x
            for block, proj, opt in zip(blocks, projs, opts, strict=True):
                opt.zero_grad(set_to_none=True)
                h = block(h.detach())
                F.cross_entropy(proj(h), y).backward()
                opt.step()
    return time.perf_counter() - t0, time.thread_time() - c0


def framework_epoch(algo: str, args: argparse.Namespace) -> dict[str, Any]:
    probe = ThreadTimeProbe()
    r = localearn.fit(algo, "mnist", arch=args.arch, schedule="joint", data_dir=args.data_dir, epochs=1,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=0.0, seed=args.seed,
                      device="cpu", progress=args.progress, probes=[probe])
    return {"seconds": r["metrics"]["train_seconds"], "cpu_seconds": probe.seconds, "steps": r["metrics"]["steps"],
            "test_accuracy": r["metrics"]["test_accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--arch", default="mlp:2x1000")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="the framework arm shows its progress bar")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", args.data_dir)
    x_train, y_train = data.x_train, data.y_train  # type: ignore[attr-defined]
    arms: dict[str, dict[str, list[Any]]] = {}
    for algo in ("mono_forward", "backprop"):
        arm_rows = arms[algo] = {"framework": [], "framework_cpu": [], "plain": [], "plain_cpu": [],
                                 "framework_runs": []}
        for rep in range(args.repeats):
            order = ("framework", "plain") if rep % 2 == 0 else ("plain", "framework")
            for arm in order:
                if arm == "framework":
                    run = framework_epoch(algo, args)
                    arm_rows["framework"].append(run["seconds"])
                    arm_rows["framework_cpu"].append(run["cpu_seconds"])
                    arm_rows["framework_runs"].append(run)
                else:
                    wall, cpu = plain_epoch(algo, x_train, y_train, args)
                    arm_rows["plain"].append(wall)
                    arm_rows["plain_cpu"].append(cpu)
            print(f"{algo:>13} repeat {rep + 1}: framework {arm_rows['framework'][-1]:.2f} s "
                  f"(cpu {arm_rows['framework_cpu'][-1]:.2f}), plain {arm_rows['plain'][-1]:.2f} s "
                  f"(cpu {arm_rows['plain_cpu'][-1]:.2f})", flush=True)
    med = statistics.median
    ratios = {a: {"wall": med(v["framework"]) / med(v["plain"]), "cpu": med(v["framework_cpu"]) / med(v["plain_cpu"])}
              for a, v in arms.items()}
    for algo, r in ratios.items():
        print(f"{algo:>13}: overhead ratio (framework / plain, medians): cpu time {r['cpu']:.3f}, wall {r['wall']:.3f}")
    name = f"overhead_{args.arch.replace(':', '-')}_cpu_{dt.date.today().isoformat()}.json"
    path = write_result(Path(args.out) / name, "bench_overhead", "cpu", args=vars(args), arms=arms,
                        ratios_framework_over_plain=ratios)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
