"""Energy of Mono-Forward vs backprop on MNIST ``mlp:2x1000``, repeated, with its spread.

Reference: Gong, Li, Abdulla, "Mono-Forward: Backpropagation-Free Algorithm for Efficient Neural
Network Training Harnessing Local Errors", arXiv:2501.09238; docs/concepts/protocol.md#rule-3 (NVML
energy counter at synchronised window edges, idle baseline, one measured run per GPU at a time
with a cooldown, GPU temperature recorded at the start).

Usage::

    python benchmarks/bench_energy.py --repeats 3 --epochs 10 --data-dir ../shared/data

Writes ``benchmarks/results/energy_<device>_<date>.json``. Without a GPU counter (or RAPL) the
file says energy was not measured and why, and no spread is computed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.measure.energy import EnergyProbe
from localearn.measure.provenance import versions
from localearn.utils import resolve_device

ALGOS = ("mono_forward", "backprop")


def spread(values: list[float]) -> dict[str, float | None]:
    """Mean, SD and relative spreads (SD / mean, (max - min) / mean) of repeated measurements."""
    if not values:
        return {"mean": None, "sd": None, "rel_sd": None, "rel_range": None, "n": 0}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "mean": mean,
        "sd": sd,
        "rel_sd": sd / mean if mean else None,
        "rel_range": (max(values) - min(values)) / mean if mean else None,
        "n": len(values),
    }


def device_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_once(algo: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    probe = EnergyProbe(
        device=args.device if args.device != "auto" else None,
        idle_seconds=args.idle_seconds,
        country=args.country,
    )
    res = localearn.fit(
        algo,
        "mnist",
        arch=args.arch,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=seed,
        device=args.device,
        progress=False,
        probes=[probe],
    )
    m = res["metrics"]
    e = m["energy"]
    return {
        "algorithm": algo,
        "seed": seed,
        "test_accuracy": m["test_accuracy"],
        "train_seconds": m["train_seconds"],
        "epochs": m["epochs"],
        "energy_method": e["method"],
        "energy_reason": e.get("reason"),
        "train_joules": e.get("train_joules"),
        "train_adjusted_joules": e.get("train_adjusted_joules"),
        "idle_w": (e.get("baseline") or {}).get("gpu_idle_w"),
        "gpu_device": (e.get("gpu") or {}).get("device"),
        "co2e_kg": (e.get("co2e") or {}).get("kg_co2e"),
        "cuda_peak_allocated_bytes": m["cuda_peak_allocated_bytes"],
        "energy": e,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="epoch cap per unit (protocol: 100)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", default="mlp:2x1000")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--device", default="auto")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--cooldown", type=float, default=30.0, help="seconds between measured runs")
    p.add_argument("--country", default=None, help="ISO code for a CodeCarbon CO2e estimate")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for algo in ALGOS:  # interleaved so that drift (temperature) hits both arms alike
            if runs and args.cooldown > 0 and device.type == "cuda":
                time.sleep(args.cooldown)
            runs.append(run_once(algo, args, seed=rep))
            r = runs[-1]
            joules = "n/a" if r["train_joules"] is None else f"{r['train_joules']:.1f} J"
            print(
                f"{algo:>12} seed {rep}: acc {r['test_accuracy']:.4f}  "
                f"train {r['train_seconds']:.2f} s  "
                f"energy {joules} [{r['energy_method']}]",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for algo in ALGOS:
        mine = [r for r in runs if r["algorithm"] == algo]
        measured_j = [r["train_joules"] for r in mine if r["train_joules"] is not None]
        summary[algo] = {
            "train_joules": spread(measured_j) if len(measured_j) == len(mine) else None,
            "train_seconds": spread([r["train_seconds"] for r in mine]),
            "test_accuracy": spread([r["test_accuracy"] for r in mine]),
        }
    methods = sorted({r["energy_method"] for r in runs})
    measured = all(r["train_joules"] is not None for r in runs)
    gpu = next((r["gpu_device"] for r in runs if r["gpu_device"]), None)
    record = {
        "benchmark": "energy: mono_forward vs backprop",
        "dataset": "mnist",
        "arch": args.arch,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "device": {"type": device.type, "slug": device_slug(device), "nvml": gpu},
        "versions": versions(),
        "energy_measured": measured,
        "energy_methods": methods,
        "not_measured_reason": None
        if measured
        else next((r["energy_reason"] for r in runs if r["train_joules"] is None), None),
        "summary": summary,
        "mf_over_bp_train_joules": (
            summary["mono_forward"]["train_joules"]["mean"]
            / summary["backprop"]["train_joules"]["mean"]
        )
        if measured
        else None,
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"energy_{device_slug(device)}_{date.today().isoformat()}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(
        f"energy measured: {measured} ({', '.join(methods)})"
        + ("" if measured else f" - {record['not_measured_reason']}")
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
