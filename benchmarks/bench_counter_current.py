"""Counter-Current Learning vs backprop: MNIST MLP, CIFAR-10-subset CNN, MNIST autoencoder.

Kao & Hariharan, *Counter-Current Learning*, NeurIPS 2024, arXiv 2409.19841 (ALGORITHMS.md §6).

Parts (``--parts mlp,cnn,ae``):

* ``mlp``: ``localearn.fit("ccl", "mnist", arch="mlp:784-5x256")`` next to
  ``localearn.fit("backprop", ...)`` on the same spec (ReLU + bias Kaiming trunk), same batch and
  epochs; prints accuracy, train seconds and ``peak_saved_activation_bytes`` with their ratio.
  It also measures one training step of BP on CCL's *own* forward network (ELU, no bias), with
  CCL's in-place ELU and with stock ``nn.ELU``, so the memory ratio can be read on equal trunks.
* ``cnn``: CCL's pool CNN (``cnn:128-128-256-256-512``, the CIFAR recipe of §6.2) and backprop on
  the same ``cnn:`` spec (localearn's conv/ReLU/pool/BN blocks) on ``cifar10_subset``.
* ``ae``: ``localearn.fit("ccl", "mnist", task="autoencoder")`` and its BP twin
  ``localearn.fit("backprop", "mnist", task="autoencoder")`` (CCL's forward network at the same
  seed and init, trained end to end on the reconstruction MSE), both ordinary Trainer runs with the
  same batches and epochs, each arm the best of an equal 8-run grid picked on validation MSE (see
  :func:`run_ae`); prints the test reconstruction MSE of both and their ratio.

Example: ``OMP_NUM_THREADS=2 python benchmarks/bench_counter_current.py --parts mlp --threads 2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from localearn.algorithms.backprop import Backprop
from localearn.algorithms.counter_current import CounterCurrent
from localearn.algorithms.counter_current.pairs import InplaceELU
from torch import nn

import localearn
from localearn.data import load_dataset
from localearn.data.base import ImageData
from localearn.learner import LocalLearner
from localearn.measure import write_result
from localearn.measure.memory import SavedTensorMeter
from localearn.trainer import Callback, Trainer, make_optimizer_factory
from localearn.utils import resolve_device, seed_everything

MLP_ARCH = "mlp:784-5x256"
CNN_ARCH = "cnn:128-128-256-256-512"
AE_ARCHS = ("cnn:32-64", "mlp:784-256-64-256")  # the reference conv AE scaled to MNIST; an MLP one
AE_CLIP = 0.2
AE_WEIGHT_DECAY = 1e-4
# the released conv AE recipe also has a 100-step loss warm-up and gradient centralisation; the MLP
# stand-in keeps its own recipe (ELU, neither of them): with ReLU, warm-up and centralisation CCL's
# MLP AE ended at 0.66 test MSE after 10 epochs instead of 0.25 (a 2-epoch probe blamed the last two)
AE_WARMUP = 100
AE_LRS = (0.01, 0.03)
AE_CCL_S_SSL = {"mlp": (2.0, 4.0), "cnn": (1.0, 2.0)}  # decorrelation (MLP) / centred-map (CNN) weight
AE_BP_INITS = ("reference", "torch")
# CIFAR-10 CCL recipe (ALGORITHMS §6.2), minus the cosine schedule the trainer does not have
CNN_CCL_OPTIONS = {"conv": "pool", "s_c": 1.0, "momentum": 0.8, "grad_clip": 0.3, "warmup_steps": 100,
                   "grad_centralization": True, "filter_target": True}


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    m = run["metrics"]
    return {
        "test_accuracy": m["test_accuracy"],
        "train_seconds": round(m["train_seconds"], 1),
        "epochs": m["epochs"],
        "peak_saved_activation_bytes": m["peak_saved_activation_bytes"],
    }


def forward_network(learner: CounterCurrent, stock_elu: bool) -> nn.Sequential:
    """A deep copy of CCL's forward maps as one network (the same-trunk BP twin)."""
    maps = [copy.deepcopy(layer.f) for layer in learner.layers[1:]]
    net = nn.Sequential(*[m for m in maps if m is not None])
    if stock_elu:  # the same trunk with torch's stock (out-of-place) ELU
        for seq in net:
            assert isinstance(seq, nn.Sequential)
            for i, m in enumerate(list(seq)):
                if isinstance(m, InplaceELU):
                    seq[i] = nn.ELU()
    return net


def bp_step_saved_bytes(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes saved for backward by one end-to-end CE step of ``net`` (parameters excluded)."""
    meter = SavedTensorMeter(list(net.parameters()))
    with meter:
        F.cross_entropy(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return meter.peak_bytes


def learner_step_saved_bytes(learner: LocalLearner, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes saved for backward by one ``learner.train_step`` (what the trainer meters)."""
    learner.configure_optimizers(make_optimizer_factory("sgd", 1e-3, 0.0, 0.0))
    meter = SavedTensorMeter(list(learner.parameters()))
    with meter:
        learner.train_step((x, y), learner.stages()[0])
    return meter.peak_bytes


def one_step_memory(data: ImageData, batch: int, seed: int) -> dict[str, Any]:
    """Saved bytes of one step at ``batch``: CCL, backprop, BP on CCL's own ELU trunk."""
    x, y = next(iter(data.train_batches(batch, torch.Generator().manual_seed(0))))
    seed_everything(seed)
    ccl = CounterCurrent(MLP_ARCH, data.input_shape, 10)
    bp = Backprop(MLP_ARCH, data.input_shape, 10)
    out: dict[str, float] = {
        "ccl": learner_step_saved_bytes(ccl, x, y),
        "backprop_relu_bias": learner_step_saved_bytes(bp, x, y),
        "bp_same_trunk_inplace_elu": bp_step_saved_bytes(forward_network(ccl, False), x, y),
        "bp_same_trunk_stock_elu": bp_step_saved_bytes(forward_network(ccl, True), x, y),
    }
    for key in ("backprop_relu_bias", "bp_same_trunk_inplace_elu", "bp_same_trunk_stock_elu"):
        out[f"ratio_ccl_vs_{key}"] = out["ccl"] / out[key]
    return out


def run_mlp(args: argparse.Namespace) -> dict[str, Any]:
    common = {
        "data_dir": args.data_dir,
        "epochs": args.epochs_mlp,
        "batch_size": args.batch_mlp,
        "seed": args.seed,
        "progress": False,
    }
    ccl = localearn.fit("ccl", "mnist", arch=MLP_ARCH, **common)
    bp = localearn.fit("backprop", "mnist", arch=MLP_ARCH, **common)
    data = load_dataset("mnist", args.data_dir)
    assert isinstance(data, ImageData)
    out: dict[str, Any] = {"ccl": _summary(ccl), "backprop_relu_bias": _summary(bp)}
    # one-step meters at the trained batch and at the reference batch 256
    out["one_step_saved_bytes"] = {str(b): one_step_memory(data, b, args.seed) for b in sorted({args.batch_mlp, 256})}
    peak = out["ccl"]["peak_saved_activation_bytes"]
    out["ratios"] = {
        "saved_bytes_vs_backprop": peak / out["backprop_relu_bias"]["peak_saved_activation_bytes"],
        "accuracy_ccl_minus_bp": out["ccl"]["test_accuracy"] - out["backprop_relu_bias"]["test_accuracy"],
    }
    return out


def run_cnn(args: argparse.Namespace) -> dict[str, Any]:
    common = {
        "data_dir": args.data_dir,
        "epochs": args.epochs_cnn,
        "seed": args.seed,
        "progress": False,
    }
    ccl = localearn.fit(
        "ccl",
        "cifar10_subset",
        arch=CNN_ARCH,
        batch_size=128,
        learner_options=CNN_CCL_OPTIONS,
        **common,
    )
    bp = localearn.fit("backprop", "cifar10_subset", arch=CNN_ARCH, batch_size=128, **common)
    out: dict[str, Any] = {"ccl": _summary(ccl), "backprop": _summary(bp)}
    out["ratios"] = {
        "saved_bytes_vs_backprop": out["ccl"]["peak_saved_activation_bytes"]
        / out["backprop"]["peak_saved_activation_bytes"],
        "accuracy_ccl_minus_bp": out["ccl"]["test_accuracy"] - out["backprop"]["test_accuracy"],
    }
    return out


class CosineLR(Callback):
    """``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch, as the old loop had it: before
    epoch e (1-based) every group's lr is its initial lr × (1 + cos(π (e − 1) / epochs)) / 2.
    A Trainer callback, so it reaches every optimizer the learner made (CCL's one per pair)."""

    def on_epoch_start(self, trainer: Trainer, stage: Any, epoch: int) -> None:
        scale = (1 + math.cos(math.pi * (epoch - 1) / trainer.config.epochs)) / 2
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale  # kept in checkpoints


def _ae_run(arm: str, variant: Any, lr: float, cosine: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One AE arm as an ordinary Trainer run (``--task autoencoder``) for ``--epochs-ae`` epochs.

    ``arm="ccl"``: ``counter_current``, ``variant`` its ``s_ssl``, reference init.
    ``arm="bp"``: ``backprop`` with ``task="autoencoder"``, i.e. CCL's forward network trained end
    to end on the reconstruction MSE, ``variant`` its init (``reference`` as CCL, or ``torch``).
    Both: SGD (momentum 0.9, weight decay 1e-4) at ``lr``, clip 0.2, for a ``cnn:`` AE also the
    loss warm-up and gradient centralisation; the same seed, so the same batches. The Trainer
    restores the best epoch on validation MSE and tests it.
    """
    conv = args.ae_arch.startswith("cnn:")
    options: dict[str, Any] = {"grad_clip": AE_CLIP, "warmup_steps": AE_WARMUP if conv else 0,
                               "grad_centralization": conv}
    options.update({"momentum": 0.9, "s_ssl": variant} if arm == "ccl" else {"init": variant})
    run = localearn.fit(
        "counter_current" if arm == "ccl" else "backprop", "mnist", task="autoencoder", arch=args.ae_arch,
        data_dir=args.data_dir, epochs=args.epochs_ae, batch_size=args.batch_ae, optimizer="sgd", lr=lr,
        weight_decay=AE_WEIGHT_DECAY, momentum=0.9, patience=args.epochs_ae, seed=args.seed, progress=False,
        learner_options=options, callbacks=[CosineLR()] if cosine else [])
    assert run["status"] == "complete", run.get("diverged")
    m, unit = run["metrics"], run["units"][0]
    out = {"config": {"variant": variant, "lr": lr, "cosine": cosine}, "train_seconds": round(m["train_seconds"], 1),
           "history": [{"epoch": h["epoch"], "val_mse": h["val_mse"]} for h in run["history"]],
           "epoch": unit["best_epoch"], "val_mse": run["history"][unit["best_epoch"] - 1]["val_mse"],
           "test_mse": m["test_mse"], "peak_saved_activation_bytes": m["peak_saved_activation_bytes"]}
    print(json.dumps({"arm": arm, **{k: v for k, v in out.items() if k != "history"}}), flush=True)
    return out


def run_ae(args: argparse.Namespace) -> dict[str, Any]:
    """Each arm picks its best of an equal grid on *validation* MSE; the ratio is of test MSE.

    Equal budgets (STUDY_PROTOCOL.md §6): both arms get the same runs, the same epochs, batches,
    SGD (momentum 0.9, weight decay 1e-4, clip 0.2; for a ``cnn:`` AE also the 100-step loss
    warm-up and gradient centralisation: the released ``stl10_ccl_legacy.yaml``) and the same grid.
    ``--ae-grid full`` (8 runs per arm): lr {0.01, 0.03} × {constant, cosine} × a third axis, for
    CCL its ``s_ssl`` (MLP decorrelation {2, 4}; CNN centred-map weight {1, 2}), for BP its
    initialisation {CCL's reference init, torch's default}. ``--ae-grid small`` (2 runs per arm):
    lr {0.01, 0.03}, constant, each arm's first variant.
    """
    data = load_dataset("mnist", args.data_dir)
    assert isinstance(data, ImageData)
    kind = args.ae_arch.split(":")[0]
    axes: dict[str, tuple[Any, ...]] = {"ccl": AE_CCL_S_SSL[kind], "bp": AE_BP_INITS}
    if args.ae_grid == "small":  # lr only: 2 runs per arm, each arm's first variant, constant lr
        axes = {arm: vs[:1] for arm, vs in axes.items()}
    runs: dict[str, list[dict[str, Any]]] = {"ccl": [], "bp": []}
    for arm, variants in axes.items():
        for variant in variants:
            for lr in AE_LRS:
                for cosine in (False, True) if args.ae_grid == "full" else (False,):
                    runs[arm].append(_ae_run(arm, variant, lr, cosine, args))
    best = {arm: min(rs, key=lambda r: r["val_mse"]) for arm, rs in runs.items()}
    x_train, _ = data.split("train")
    x_test, _ = data.split("test")
    mean_mse = F.mse_loss(x_train.mean(0, keepdim=True).expand_as(x_test), x_test).item()
    same = {
        arm: next(r for r in rs if r["config"] == {"variant": axes[arm][0], "lr": AE_LRS[0], "cosine": False})
        for arm, rs in runs.items()
    }
    return {
        "arch": args.ae_arch,
        "grid": args.ae_grid,
        "epochs": args.epochs_ae,
        "batch_size": args.batch_ae,
        "selected": {
            arm: {k: r[k] for k in ("config", "epoch", "val_mse", "test_mse", "train_seconds")}
            for arm, r in best.items()
        },
        "runs": runs,
        "mean_image_test_mse": mean_mse,
        "ratios": {
            "test_mse_ccl_over_bp": best["ccl"]["test_mse"] / best["bp"]["test_mse"],
            # one fixed recipe for both (lr 0.01, constant, each arm's first variant: CCL's first
            # s_ssl, BP at CCL's init)
            "test_mse_ccl_over_bp_same_recipe": same["ccl"]["test_mse"] / same["bp"]["test_mse"],
            "saved_bytes_ccl_over_bp_same_recipe": same["ccl"]["peak_saved_activation_bytes"]
            / same["bp"]["peak_saved_activation_bytes"],
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="mlp,cnn,ae")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs-mlp", type=int, default=10)
    p.add_argument("--batch-mlp", type=int, default=64)
    p.add_argument("--epochs-cnn", type=int, default=5)
    p.add_argument("--epochs-ae", type=int, default=10)
    p.add_argument("--batch-ae", type=int, default=64)
    p.add_argument("--ae-arch", default=AE_ARCHS[0], help=f"autoencoder spec ({' or '.join(AE_ARCHS)}, or any)")
    p.add_argument("--ae-grid", choices=("full", "small"), default="full", help="8 or 2 runs per arm")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runners = {"mlp": run_mlp, "cnn": run_cnn, "ae": run_ae}
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    for part in args.parts.split(","):
        if part not in runners:
            raise SystemExit(f"unknown part {part!r}; valid: {', '.join(runners)}")
        t0 = time.perf_counter()
        results[part] = runners[part](args)
        results[part]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        print(part, json.dumps(results[part].get("ratios", {})), flush=True)
    print(json.dumps(results, indent=1))
    if args.out is not None:
        write_result(args.out, "bench_counter_current", resolve_device("auto"), threads=args.threads, **results)


if __name__ == "__main__":
    main()
