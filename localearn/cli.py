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

from localearn.cli_args import build_parser, options, typed
from localearn.distributed import env_rank, rank_dir, restarted
from localearn.errors import LocalearnError
from localearn.measure.capabilities import environment_report, format_environment
from localearn.measure.energy import EnergyProbe
from localearn.measure.energy_report import format_energy
from localearn.outcome import EXIT_DIVERGED, summary_lines
from localearn.recipes import format_recipes, recipe_table
from localearn.registry import aliases_of, get_algorithm, list_algorithms
from localearn.run import fit, load_run
from localearn.rundir import describe_data
from localearn.studies.cli import cmd_study as run_study
from localearn.tasks import evaluate, get_task
from localearn.utils import resolve_device


def _summary(r: dict[str, Any], out: Path) -> str:
    m = r["metrics"]
    metric = get_task(r.get("task", "classification")).metric

    def mib(v: int | None) -> str:
        return "n/a" if v is None else f"{v / 2**20:.2f} MiB"

    lines = [
        "",
        f"localearn {r['algorithm']} on {r['dataset']} ({r['arch']}, {r['schedule']}, seed {r['seed']}, "
        f"{r.get('update', {}).get('precision', 'fp32')})",
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
    if not args.resume:
        args.algo = args.algo or "mono_forward"
        if args.dataset is None:  # the bundled default of the learner's kind
            args.dataset = "karate" if get_algorithm(args.algo).supports_graphs else "digits"
    # Every rank of a torchrun job must name the same directory: the launcher's run id, not a clock.
    stamp = os.environ.get("TORCHELASTIC_RUN_ID") or time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{args.algo}-{args.dataset}-{stamp}"
    if args.resume and not args.out:
        raise LocalearnError("--resume needs --out DIR naming the run to continue")
    held = rank_dir(out, args.parallel) / "checkpoint.pt"
    if restarted() and (held.parent.is_dir() if args.parallel != "none" else held.is_file()):
        args.resume = True  # torchrun --max-restarts relaunched the job (one process too): continue
    if not args.resume and held.exists():
        raise LocalearnError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    probes: list[Any] = []
    if args.energy or args.country is not None:
        probes.append(EnergyProbe(country=args.country, idle_seconds=args.idle_seconds))
    train = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                 optimizer=args.optimizer, patience=args.patience, stop_metric=args.stop_metric,
                 restore_best=not args.no_restore, seed=args.seed, prefix_cache_gb=args.prefix_cache_gb,
                 kernels=args.kernels, compile=args.compile, parallel=args.parallel, split=args.split,
                 replicas=args.replicas, pipeline_depth=args.pipeline_depth, dist_timeout=args.dist_timeout,
                 precision=args.precision, cuda_graphs=args.cuda_graphs, data_on_device=args.data_on_device,
                 log_every=args.log_every, grad_clip=args.grad_clip, clip_scope=args.clip_scope,
                 grad_centralization=args.grad_centralization, loss_warmup_steps=args.loss_warmup_steps,
                 lr_warmup_steps=args.lr_warmup_steps, lr_schedule=args.lr_schedule)
    if args.resume:  # only the values typed, so that the run can say which of them its stored ones override
        given = typed(args)
        train = {k: v for k, v in train.items() if {"restore_best": "no_restore"}.get(k, k) in given}
    try:
        result = fit(
            args.algo, args.dataset, arch=args.arch, model=args.model, blocks=args.blocks,
            balance=args.balance, model_options=options(args.model_opt, "--model-opt") or None,
            schedule=args.schedule, data_dir=args.data_dir,
            download=args.download, split_seed=args.split_seed if "split_seed" in typed(args) else None,
            task=args.task, learner_options=options(args.opt, "--opt"),
            dataset_options=options(args.data_opt, "--data-opt"), out=out, resume=args.resume,
            device=args.device, progress=not args.no_progress, probes=probes, given_by="cli", **train,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last completed epoch is saved; continue with\n"
              f"  localearn train --out {out} --resume", file=sys.stderr)
        return 130
    if env_rank() == 0:  # one summary per job
        print(json.dumps(result, indent=2, default=str) if args.json else _summary(result, out))
    if result["status"] == "diverged":
        return EXIT_DIVERGED
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    learner, data, ckpt = load_run(args.checkpoint, args.data_dir, device=str(device), model=args.model)
    where = describe_data(data.name, args.data_dir)  # the user's folder: a run directory names none
    scores = evaluate(learner, data, args.split, 256, device)
    total = int(scores["samples"])
    metric = next(k for k in scores if k not in ("loss", "samples"))  # accuracy, roc_auc or mse
    res = {"algorithm": learner.name, "dataset": data.name, "split": args.split,
           metric: scores[metric], "loss": scores["loss"], "samples": total,
           "complete": ckpt.get("complete") is True, "data": where.removeprefix("data: ")}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        note = "" if res["complete"] else "  (checkpoint of an unfinished run)"
        print(f"{res['algorithm']} on {res['dataset']} {args.split}: {metric} {res[metric]:.4f} "
              f"({total} samples){note}\n{where}")
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
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
    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_environment(report))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    print(format_recipes(recipe_table(args.algo), args.json))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    return run_study(args)


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
