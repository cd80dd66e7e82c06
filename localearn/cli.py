"""The ``localearn`` command: ``train``, ``eval``, ``algos``.

Bad input prints one ``error: ...`` line and exits with status 2; Ctrl-C leaves a resumable
checkpoint and exits with status 130; a diverged run (non-finite loss or parameter, see
:mod:`localearn.outcome`) writes its run.json and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from localearn.errors import LocalearnError


def _parse_value(text: str) -> Any:
    """``--opt key=value`` values: JSON when it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise LocalearnError(f"{flag} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localearn", description="Train neural networks without end-to-end backpropagation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    t.add_argument("--compile", action="store_true", help="torch.compile each layer's local step")
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
    from localearn.studies.cli import add_study_parser

    add_study_parser(sub)  # localearn study run|report|list
    return parser


def _summary(r: dict[str, Any], out: Path) -> str:
    from localearn.measure.energy_report import format_energy
    from localearn.outcome import summary_lines
    from localearn.tasks import get_task

    m = r["metrics"]
    metric = get_task(r.get("task", "classification")).metric

    def mib(v: int | None) -> str:
        return "n/a" if v is None else f"{v / 2**20:.2f} MiB"

    lines = [
        "",
        f"localearn {r['algorithm']} on {r['dataset']} ({r['arch']}, {r['schedule']}, seed {r['seed']})",
        *(summary_lines(r) if r["status"] == "diverged" else
          [f"  test {metric:<15} {m['test_' + metric]:.4f}   (val {m['val_' + metric]:.4f})"]),
        f"  train time           {m['train_seconds']:.2f} s   ({m['samples_per_second']:.0f} samples/s, "
        f"{m['data_passes']} data passes)",
        f"  validate / ckpt      {m['validate_seconds']:.2f} s / {m['checkpoint_seconds']:.2f} s (metered apart)",
        f"  saved for backward   {mib(m['peak_saved_activation_bytes'])} peak",
        f"  peak RSS             {mib(m['peak_rss_bytes'])}",
        f"  CUDA peak allocated  {mib(m['cuda_peak_allocated_bytes'])}",
    ]
    lines += format_energy(m.get("energy"))
    units = ", ".join(f"{u['unit']}: {u['epochs']} ep (best {u['best_epoch']})" for u in r["units"])
    lines += [f"  units                {units}", f"  run record           {out / 'run.json'}"]
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from localearn.run import fit

    if not args.resume:
        from localearn.registry import get_algorithm

        args.algo = args.algo or "mono_forward"
        if args.dataset is None:  # the bundled default of the learner's kind
            args.dataset = "karate" if get_algorithm(args.algo).supports_graphs else "digits"
    from localearn.distributed import env_rank, rank_dir, restarted

    # Every rank of a torchrun job must name the same directory: the launcher's run id, not a clock.
    stamp = os.environ.get("TORCHELASTIC_RUN_ID") or time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{args.algo}-{args.dataset}-{stamp}"
    if args.resume and not args.out:
        raise LocalearnError("--resume needs --out DIR naming the run to continue")
    held = rank_dir(out, args.parallel) / "checkpoint.pt"
    if args.parallel != "none" and restarted() and held.parent.is_dir():
        args.resume = True  # torchrun --max-restarts relaunched the job: continue from the checkpoints
    if not args.resume and held.exists():
        raise LocalearnError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    probes: list[Any] = []
    if args.energy or args.country is not None:
        from localearn.measure.energy import EnergyProbe

        probes.append(EnergyProbe(country=args.country, idle_seconds=args.idle_seconds))
    try:
        result = fit(
            args.algo, args.dataset, arch=args.arch, model=args.model, blocks=args.blocks,
            balance=args.balance, model_options=_options(args.model_opt, "--model-opt") or None,
            schedule=args.schedule, data_dir=args.data_dir,
            download=args.download, split_seed=args.split_seed, task=args.task,
            learner_options=_options(args.opt, "--opt"), dataset_options=_options(args.data_opt, "--data-opt"),
            out=out, resume=args.resume, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, optimizer=args.optimizer, patience=args.patience,
            stop_metric=args.stop_metric, restore_best=not args.no_restore, seed=args.seed,
            device=args.device, progress=not args.no_progress, probes=probes, given_by="cli",
            prefix_cache_gb=args.prefix_cache_gb,
            kernels=args.kernels, compile=args.compile, parallel=args.parallel, split=args.split,
            replicas=args.replicas, pipeline_depth=args.pipeline_depth, dist_timeout=args.dist_timeout,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last completed epoch is saved; continue with\n"
              f"  localearn train --out {out} --resume", file=sys.stderr)
        return 130
    if env_rank() == 0:  # one summary per job
        print(json.dumps(result, indent=2, default=str) if args.json else _summary(result, out))
    if result["status"] == "diverged":
        from localearn.outcome import EXIT_DIVERGED

        return EXIT_DIVERGED
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from localearn.run import load_run
    from localearn.trainer import evaluate
    from localearn.utils import resolve_device

    device = resolve_device(args.device)
    learner, data, ckpt = load_run(args.checkpoint, args.data_dir, device=str(device), model=args.model)
    scores = evaluate(learner, data, args.split, 256, device)
    total = int(scores["samples"])
    metric = next(k for k in scores if k not in ("loss", "samples"))  # accuracy, roc_auc or mse
    res = {"algorithm": ckpt["run"]["algorithm"], "dataset": data.name, "split": args.split,
           metric: scores[metric], "loss": scores["loss"], "samples": total,
           "complete": ckpt.get("complete")}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        note = "" if res["complete"] else "  (checkpoint of an unfinished run)"
        print(f"{res['algorithm']} on {res['dataset']} {args.split}: {metric} {res[metric]:.4f} "
              f"({total} samples){note}")
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
    from localearn.registry import aliases_of, get_algorithm, list_algorithms

    rows = []
    for name in list_algorithms():
        cls = get_algorithm(name)
        rows.append({"name": name, "aliases": list(aliases_of(name)), "paper": cls.paper, **cls.capabilities(),
                     "models": bool(getattr(cls, "takes_models", False))})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        alias = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']}{alias}\n  paper: {r['paper']}\n"
              f"  schedules: {', '.join(r['schedules'])} (default {r['default_schedule']}); "
              f"data: {'graphs' if r['graphs'] else 'images'}; block-local: {r['block_local']}; "
              f"stops on: {r['stop_metric']}; default arch: {r['default_arch']}"
              + ("; --model: yes" if r["models"] else "")
              + (f"\n  coupling: {r['coupling']}" if r.get("coupling") else "")
              + "\n  " + "; ".join(f"--parallel {mode}: " + (f"no ({r[mode + '_refusal']})" if r[mode + "_refusal"]
                                    else "yes") for mode in ("pipeline", "ddp")))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from localearn.measure.capabilities import environment_report, format_environment

    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_environment(report))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from localearn.recipes import format_recipes, recipe_table

    print(format_recipes(recipe_table(args.algo), args.json))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from localearn.studies.cli import cmd_study as run

    return run(args)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "algos": cmd_algos, "env": cmd_env, "recipes": cmd_recipes,
            "study": cmd_study}


def main(argv: list[str] | None = None) -> int:
    # torchvision/torch_geometric import torch.jit.script, which torch now flags; not the user's concern.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LocalearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
