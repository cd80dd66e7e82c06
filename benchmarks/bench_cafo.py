"""CaFo benchmark: predictor losses on MNIST, DFA vs random blocks on the CIFAR-10 subset.

Zhao et al., *The Cascaded Forward Algorithm for Neural Network Training*, arXiv 2303.09728.

Arms (all ``cnn:32-128-512``, one training unit per predictor, Rule 1 stopping with best restore):

* ``mnist``: random blocks with the ``ce`` (Adam), ``mse`` (closed form) and ``sparsemax``
  predictors on MNIST (50k/10k/10k).
* ``cifar``: random vs DFA-trained blocks, ``ce`` predictors, on the offline CIFAR-10 subset
  (3 600 / 400 / 1 000), without augmentation so that block features are cached.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_cafo.py --suite mnist --epochs 8
    OMP_NUM_THREADS=2 python benchmarks/bench_cafo.py --suite cifar --epochs 30 --dfa-epochs 10

Each run's ``run.json`` goes to ``<out>/<suite>/<arm>/``; a summary (JSON and a Markdown table)
to ``<out>/cafo_<suite>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import localearn
from localearn.measure import write_result
from localearn.utils import resolve_device

ARMS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "mnist": [
        ("rand-ce", "mnist", {"blocks": "rand", "predictor_loss": "ce"}),
        ("rand-mse", "mnist", {"blocks": "rand", "predictor_loss": "mse"}),
        ("rand-sparsemax", "mnist", {"blocks": "rand", "predictor_loss": "sparsemax"}),
    ],
    "cifar": [
        ("rand-ce", "cifar10_subset", {"blocks": "rand", "predictor_loss": "ce"}),
        ("dfa-ce", "cifar10_subset", {"blocks": "dfa", "predictor_loss": "ce"}),
    ],
}


def run_arm(
    name: str, dataset: str, options: dict[str, Any], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """Train one arm and return the numbers worth reporting."""
    opts = dict(options)
    if opts["blocks"] == "dfa" and args.dfa_epochs is not None:
        opts["dfa_epochs"] = args.dfa_epochs
    dataset_options = {"augment": False} if dataset.startswith("cifar") else {}
    t0 = time.perf_counter()
    r = localearn.fit(
        "cafo",
        dataset,
        data_dir=args.data_dir,
        learner_options=opts,
        dataset_options=dataset_options,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        progress=args.progress,
        out=out / name,
    )
    wall = time.perf_counter() - t0
    m = r["metrics"]
    per_unit: dict[str, dict[str, Any]] = {}
    for u in r["units"]:
        epochs = [h for h in r["history"] if h["unit"] == u["unit"]]
        per_unit[u["unit"]] = {
            "epochs": u["epochs"],
            "best_epoch": u["best_epoch"],
            "best_val_loss": u.get("best_val_loss"),
            "val_acc_at_best": epochs[u["best_epoch"] - 1]["val_accuracy"],
        }
    blocks = sorted(k for k, v in m["per_layer"].items() if "test_accuracy" in v)
    return {
        "arm": name,
        "dataset": dataset,
        "learner_options": opts,
        "dataset_options": dataset_options,
        "test_accuracy": m["test_accuracy"],
        "val_accuracy": m["val_accuracy"],
        "per_block_test_accuracy": {k: m["per_layer"][k]["test_accuracy"] for k in blocks},
        "units": per_unit,
        "epochs_total": m["epochs"],
        "train_seconds": m["train_seconds"],
        "validate_seconds": m["validate_seconds"],
        "wall_seconds": wall,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the summary rows."""
    lines = [
        "| arm | dataset | test acc | per-block test acc | epochs per unit | train s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        blocks = " / ".join(f"{v:.4f}" for v in r["per_block_test_accuracy"].values())
        units = ", ".join(
            f"{k} {u['epochs']} (best {u['best_epoch']})" for k, u in r["units"].items()
        )
        lines.append(
            f"| {r['arm']} | {r['dataset']} | {r['test_accuracy']:.4f} | {blocks} | {units} "
            f"| {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=[*ARMS, "all"], default="all")
    p.add_argument("--arms", nargs="*", help="only these arm names (e.g. rand-ce dfa-ce)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=10, help="cap per training unit")
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--dfa-epochs", type=int, default=None, help="cap of the DFA block unit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    suites = list(ARMS) if args.suite == "all" else [args.suite]
    out = Path(args.out)
    for suite in suites:
        rows = []
        for name, dataset, options in ARMS[suite]:
            if args.arms and name not in args.arms:
                continue
            row = run_arm(name, dataset, options, args, out / f"cafo_{suite}")
            print(json.dumps(row), flush=True)
            rows.append(row)
        write_result(out / f"cafo_{suite}.json", "bench_cafo", resolve_device("auto"),
                     suite=suite, args=vars(args), rows=rows)
        (out / f"cafo_{suite}.md").write_text(table(rows) + "\n")
        print(table(rows))


if __name__ == "__main__":
    main()
