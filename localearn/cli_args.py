"""The ``localearn`` command line's parser: every subcommand's options, and ``--opt KEY=VALUE`` parsing.

What each option means is documented in ``localearn <command> --help`` and docs/guides/cli.md;
:mod:`localearn.cli` runs the commands.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from localearn.errors import LocalearnError
from localearn.studies.cli import add_study_parser


def parse_value(text: str) -> Any:
    """``--opt key=value`` values: JSON when it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def options(pairs: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise LocalearnError(f"{flag} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def typed(args: argparse.Namespace) -> set[str]:
    """The ``train`` options given on the command line (values that differ from the defaults)."""
    defaults = vars(build_parser().parse_args(["train"]))
    return {k for k, v in vars(args).items() if k in defaults and defaults[k] != v}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localearn", description="Train neural networks without end-to-end backpropagation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_parser(sub)
    e = sub.add_parser("eval", help="evaluate a saved run's checkpoint on its test set")
    e.add_argument("checkpoint", help="checkpoint.pt or its run directory")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", choices=["test", "val", "train"], default="test")
    e.add_argument("--device", default="cpu")
    e.add_argument("--model", default=None, metavar="SOURCE",
                   help="the run's package.module:factory model, named again (a run directory never names code)")
    e.add_argument("--json", action="store_true")
    a = sub.add_parser("algos", help="list learners, their papers and capabilities")
    a.add_argument("--json", action="store_true")
    r = sub.add_parser("recipes", help="each learner's reference recipe (the defaults) and its sources")
    r.add_argument("--algo", default=None, help="one learner (default: all)")
    r.add_argument("--json", action="store_true")
    v = sub.add_parser("env", help="what this machine can measure (GPU, NVML, RAPL, CodeCarbon, Triton)")
    v.add_argument("--json", action="store_true")
    add_study_parser(sub)  # localearn study run|report|list
    return parser


def add_train_parser(sub: Any) -> None:
    """``localearn train``'s options (TrainConfig fields, learner and dataset options, run control)."""
    t = sub.add_parser("train", help="train a learner and write run.json")
    t.add_argument("--algo", default=None,
                   help="learner name or alias (default mono_forward; see `localearn algos`)")
    t.add_argument("--dataset", default=None,
                   help="dataset name (default: digits, or karate for graph learners; both bundled)")
    t.add_argument("--arch", default=None, help="architecture spec, e.g. mlp:2x1000, cnn:32-128-512")
    t.add_argument("--model", default=None, metavar="SOURCE",
                   help="train a model's blocks instead of --arch: torchvision:NAME, timm:NAME or "
                   "package.module:factory")
    t.add_argument("--blocks", default=None, metavar="K|NAME,NAME",
                   help="with --model: K blocks (default 4), or module names to cut after (layer1,layer2)")
    t.add_argument("--balance", choices=["activations", "flops", "params"], default=None,
                   help="with --model --blocks K: balance the blocks' activation memory (default), FLOPs or parameters")
    t.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor option, repeatable (e.g. --model-opt stem=imagenet)")
    t.add_argument("--epochs", type=int, default=None,
                   help="epoch cap per training unit (default: the recipe's; see `localearn recipes`)")
    t.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the learner's)")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None)
    t.add_argument("--schedule", choices=["joint", "greedy"], default=None,
                   help="joint: every layer each batch; greedy: stage by stage")
    t.add_argument("--task", choices=["classification", "link", "autoencoder"], default=None,
                   help="what to learn: link (forward_gnn, backprop_gnn), autoencoder (counter_current)")
    t.add_argument("--patience", type=int, default=None,
                   help="epochs without improvement per unit (default: the recipe's)")
    t.add_argument("--stop-metric", choices=["val_loss", "val_acc"], default=None)
    t.add_argument("--prefix-cache-gb", type=float, default=0.0,
                   help="memoise a greedy unit's frozen prefix up to this many GiB (default 0: recompute)")
    t.add_argument("--no-restore", action="store_true", help="do not restore best states (all arms)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split-seed", type=int, default=0, help="seed of the validation split")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--kernels", choices=["auto", "torch", "triton"], default="auto",
                   help="fused FF/MF layer ops: auto = Triton on CUDA, torch elsewhere (localearn.kernels)")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile each layer's local step: forward, loss, backward and optimizer step")
    t.add_argument("--cuda-graphs", action="store_true",
                   help="with --compile on CUDA: capture each compiled step in a CUDA graph (static shapes)")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast every local step and evaluation (fp16: one gradient scaler per layer)")
    t.add_argument("--data-on-device", choices=["auto", "on", "off"], default="auto",
                   help="hold an in-memory dataset on the GPU and shuffle it there (auto: when it fits)")
    t.add_argument("--log-every", type=int, default=50,
                   help="steps between reads of the device-side losses (progress bar, divergence check)")
    t.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (default: the learner's; 0: off)")
    t.add_argument("--clip-scope", choices=["layer", "network"], default=None,
                   help="clip each layer alone, or network-wide (a declared coupling)")
    t.add_argument("--grad-centralization", action=argparse.BooleanOptionalAction, default=None,
                   help="centralise weight gradients before clipping (default: the learner's)")
    t.add_argument("--loss-warmup-steps", type=int, default=None, help="linear loss warm-up length in steps")
    t.add_argument("--lr-warmup-steps", type=int, default=None, help="linear learning-rate warm-up length in steps")
    t.add_argument("--lr-schedule", choices=["constant", "cosine", "cooldown"], default=None,
                   help="per-epoch lr schedule of each training unit (default: the learner's recipe)")
    t.add_argument("--parallel", choices=["none", "pipeline", "ddp"], default="none",
                   help="train across torchrun processes: layer groups per rank, or data parallel")
    t.add_argument("--split", default=None,
                   help="pipeline layers per rank, e.g. 2,2 (chain positions: CaFo counts a block with its "
                   "predictor as one; default: balanced)")
    t.add_argument("--replicas", type=int, default=1,
                   help="with --parallel pipeline: data-parallel copies of the pipeline (world = replicas x ranks)")
    t.add_argument("--pipeline-depth", type=int, default=2, help="batches in flight per pipeline link")
    t.add_argument("--dist-timeout", type=float, default=120.0,
                   help="seconds to wait for a peer rank before the job fails")
    t.add_argument("--data-dir", default=None, help="dataset folder (default $LOCALEARN_DATA_DIR or ./data)")
    t.add_argument("--download", action="store_true", help="download a missing dataset")
    t.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="learner option, repeatable (e.g. --opt prediction=sum)")
    t.add_argument("--data-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable (e.g. --data-opt augment=false)")
    t.add_argument("--out", default=None, help="run directory (default runs/<algo>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bars or epoch lines")
    t.add_argument("--json", action="store_true", help="print run.json to stdout at the end")
    t.add_argument("--energy", action="store_true",
                   help="meter energy: NVML counter on a GPU, RAPL on the CPU, idle baseline first")
    t.add_argument("--country", default=None,
                   help="ISO 3166-1 code (POL or PL) for a CodeCarbon CO2e estimate (implies --energy)")
    t.add_argument("--idle-seconds", type=float, default=10.0,
                   help="idle baseline before training, with --energy (default 10)")
