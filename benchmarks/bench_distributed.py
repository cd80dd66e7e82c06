"""One process against 2 pipeline ranks and 2 data-parallel ranks, in one run (issues #13, #20).

    python benchmarks/bench_distributed.py --data-dir ../shared/data --epochs 2

    python benchmarks/bench_distributed.py --data-dir ../shared/data --arms mf_1proc,mf_pipeline2 --repeats 5

    python benchmarks/bench_distributed.py --data-dir ../shared/data --arms noprop_1proc,noprop_pipeline2 \
        --arch cnn:8-16-32 --epochs 1 --opt width=128 --opt hidden=64 --opt blocks_per_step=all \
        --opt inference=mean

Arms, each a real ``localearn train`` (``torchrun --standalone --nproc-per-node N`` for the
parallel ones), one thread per process (``OMP_NUM_THREADS=1``), on MNIST ``mlp:4x1000``:
Mono-Forward (Gong et al., arXiv 2501.09238; joint schedule, so every layer works on every batch)
in one process, as a 2-rank layer pipeline and under 2-rank DDP; backprop in one process and
under 2-rank DDP. Throughput is training samples per second of the slowest rank (``data passes x
N / max over ranks of train_seconds``, the metered training windows; validation and test are
metered apart), and the ratio is against the same learner's one-process arm. ``--repeats N`` runs the chosen arms
N times interleaved (1-proc, pipeline, 1-proc, pipeline, ...), so a slow spell on a shared
machine hits every arm alike; the ratio is then of the medians, and every run is kept with the
load average around it. ``mf_pipeline2_dist`` forces the pipeline's torch.distributed transport
(``LOCALEARN_PIPELINE_TRANSPORT=dist``) where ``mf_pipeline2`` takes shared memory on one host
(:mod:`localearn.distributed.transport`). ``--device cuda``
runs the same arms on GPUs (one per rank, NCCL). The NoProp-DT arms (second command) compare one
process with a 2-rank pipeline whose ranks each hold half the blocks. Results go to
``benchmarks/results/distributed_[noprop_]<arch>_<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from localearn.measure import write_result
from localearn.runrecord import read_record

ARMS = [  # (name, algo, processes, parallel)
    ("mf_1proc", "mono_forward", 1, "none"),
    ("mf_pipeline2", "mono_forward", 2, "pipeline"),
    ("mf_pipeline2_dist", "mono_forward", 2, "pipeline"),  # LOCALEARN_PIPELINE_TRANSPORT=dist
    ("mf_ddp2", "mono_forward", 2, "ddp"),
    ("bp_1proc", "backprop", 1, "none"),
    ("bp_ddp2", "backprop", 2, "ddp"),
    # NoProp-DT's blocks never read each other in training: with --opt blocks_per_step=all every
    # block works on every batch, so 2 ranks halve the work (not run by default: pick a cnn: arch).
    ("noprop_1proc", "noprop", 1, "none"),
    ("noprop_pipeline2", "noprop", 2, "pipeline"),
]
DEFAULT_ARMS = "mf_1proc,mf_pipeline2,mf_ddp2,bp_1proc,bp_ddp2"
PAIRS = (("mf_pipeline2", "mf_1proc"), ("mf_pipeline2_dist", "mf_1proc"), ("mf_ddp2", "mf_1proc"),
         ("bp_ddp2", "bp_1proc"), ("noprop_pipeline2", "noprop_1proc"))


def run_arm(args: argparse.Namespace, name: str, algo: str, nproc: int, parallel: str, out: Path) -> dict[str, Any]:
    """Train one arm; its throughput, accuracy and per-rank traffic from ``run.json``."""
    train = ["-m", "localearn", "train", "--algo", algo, "--dataset", args.dataset, "--data-dir", args.data_dir,
             "--arch", args.arch, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
             "--device", args.device, "--no-progress", "--out", str(out)]
    train += [a for kv in args.opt for a in ("--opt", kv)]
    if algo == "mono_forward":
        train += ["--schedule", "joint"]
    if parallel == "none":
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               *train, "--parallel", parallel]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if name.endswith("_dist"):
        env["LOCALEARN_PIPELINE_TRANSPORT"] = "dist"
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{algo} {parallel} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    run = read_record(out)
    spread, seconds = run.distributed, run.train_seconds or 0.0
    ranks = spread["ranks"] if spread else [{"rank": 0, "train_seconds": seconds, "bytes_sent": 0, "wait_seconds": 0.0,
                                             "samples": round((run.samples_per_second or 0.0) * seconds)}]
    slowest = max(r["train_seconds"] for r in ranks)
    # Rows trained: DDP ranks each see a share of every batch; pipeline ranks all see every row.
    rows = sum(r["samples"] for r in ranks) if parallel == "ddp" else ranks[0]["samples"]
    return {"command": " ".join(cmd[1:]), "test_accuracy": run.test, "data_passes": run.data_passes,
            "train_seconds_slowest_rank": slowest, "samples_per_second": rows / slowest,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "ranks": [{k: r.get(k) for k in ("rank", "layers", "train_seconds", "samples", "bytes_sent",
                                               "wait_seconds", "transport")} for r in ranks]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="mlp:4x1000")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"of {', '.join(a[0] for a in ARMS)}")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="learner option for every arm")
    p.add_argument("--repeats", type=int, default=1, help="runs per arm, interleaved; ratios of the medians")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/...)")
    args = p.parse_args()
    chosen = args.arms.split(",")
    unknown = sorted(set(chosen) - {a[0] for a in ARMS})
    if unknown or args.repeats < 1:
        p.error(f"unknown arms {unknown}" if unknown else "--repeats must be at least 1")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, algo, nproc, parallel in ARMS:
                if name in chosen:
                    r = run_arm(args, name, algo, nproc, parallel, Path(tmp) / f"{name}_{rep}")
                    runs.setdefault(name, []).append(r)
                    waits = " ".join(f"{x['wait_seconds']:.1f}" for x in r["ranks"])
                    print(f"{name:>17} #{rep + 1}: test acc {r['test_accuracy']:.4f}  {r['samples_per_second']:8.0f}"
                          f" samples/s  (slowest rank {r['train_seconds_slowest_rank']:.1f} s, waits {waits} s,"
                          f" load {r['load_average_1min'][0]:.1f})", flush=True)
    results = {name: {"median_samples_per_second": statistics.median(r["samples_per_second"] for r in rs),
                      "median_train_seconds_slowest_rank": statistics.median(
                          r["train_seconds_slowest_rank"] for r in rs),
                      "test_accuracy": [r["test_accuracy"] for r in rs], "runs": rs}
               for name, rs in runs.items()}
    ratios = {name: results[name]["median_samples_per_second"] / results[base]["median_samples_per_second"]
              for name, base in PAIRS if name in results and base in results}
    for name, ratio in ratios.items():
        print(f"throughput {name} / one process (medians of {args.repeats}): {ratio:.3f}x")
    date = dt.date.today().isoformat()
    tag = "noprop_" if any(name.startswith("noprop") for name in chosen) else ""
    path = args.out or f"benchmarks/results/distributed_{tag}{args.arch.replace(':', '-')}_{args.device}_{date}.json"
    write_result(path, "bench_distributed", args.device, settings=vars(args), arms=results,
                 throughput_ratios=ratios)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
