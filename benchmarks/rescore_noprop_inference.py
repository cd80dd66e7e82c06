"""Re-score a saved NoProp-DT run under both inference paths, on the validation split.

    python benchmarks/rescore_noprop_inference.py RUN_DIR [--split val] [--data-dir DIR]

Li, Teh & Pascanu, *NoProp*, arXiv 2503.24322: inference runs z_0 → z_T through all T blocks,
``z_t = a_t û_t + b_t z_{t−1} + √c_t ε``; ``mean`` drops the √c_t ε term (docs/learners/noprop.md#pitfalls
pitfall 4). The same weights are scored with the paper's stochastic sampler and with the mean
path, so the difference is the inference rule alone. Selection evidence belongs on validation, so
that is the default split. Works on the checkpoint of an unfinished run too.
"""

from __future__ import annotations

import argparse
import json

import torch

from localearn.run import load_run
from localearn.trainer import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    learner, data, _ = load_run(args.run_dir, args.data_dir)
    scores = {}
    for mode in ("stochastic", "mean"):
        setattr(learner, "inference", mode)  # noqa: B010 (nn.Module types attributes as tensors/modules)
        torch.manual_seed(0)  # the stochastic path draws z_0 and ε
        s = evaluate(learner, data, args.split, 256, torch.device("cpu"))
        scores[mode] = {"accuracy": float(s["accuracy"]), "loss": float(s["loss"]), "samples": int(s["samples"])}
    print(json.dumps({"run": args.run_dir, "split": args.split, "scores": scores}, indent=2))


if __name__ == "__main__":
    main()
