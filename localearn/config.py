"""Trainer options and the per-layer optimizer factory (:class:`~localearn.trainer.Trainer`).

Options that belong to the training protocol live here (docs/concepts/protocol.md); learner
options live with the learner. ``localearn.trainer`` re-exports both names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from localearn.errors import ConfigError
from localearn.learner import OptimizerFactory
from localearn.update import UpdatePolicy

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainConfig:
    """Trainer options (learner options live with the learner).

    Attributes:
        epochs: cap per training unit (protocol default 100; 20 keeps the CLI quick).
        batch_size: training batch; evaluation uses twice it.
        optimizer, lr, weight_decay: None takes the learner's ``default_optimizer``.
        momentum: SGD momentum.
        patience: epochs without improvement before a unit stops (protocol: 20).
        min_delta: improvement needed to reset patience (protocol: 0).
        stop_metric: ``val_loss`` | ``val_acc`` (the task's metric: accuracy, ROC-AUC or MSE); None
            takes the learner's declaration.
        restore_best: restore every unit's best state (all or none, Rule 2).
        seed: seeds the data order and every per-epoch random draw.
        device: ``auto`` | ``cpu`` | ``cuda``.
        warmup_steps: first steps metered in their own ``warmup`` window (counted in training).
        progress: show progress bars and per-epoch lines.
        measure_memory: track bytes saved for backward (saved-tensor hooks).
        prefix_cache_gb: memo for a greedy unit's frozen prefix, up to this many GiB (0: off,
            recompute every batch as the reference does); see ``LocalLearner.train_step``.
        kernels: ``auto`` | ``torch`` | ``triton``, the fused-layer implementation (localearn.kernels).
        compile: run each layer's local step through ``torch.compile``.
        evaluate_test: evaluate the test split at the end; tuning trials set False (Rule 4).
        parallel: ``none`` | ``pipeline`` | ``ddp``, training across ``torchrun`` processes
            (:mod:`localearn.distributed`).
        split: pipeline layers per rank (``"2,2"``); None balances parameter counts.
        replicas: with ``pipeline``, copies of the pipeline that split every batch's rows and
            average each layer's gradient, as ``ddp`` does (world size = replicas x pipeline ranks).
        pipeline_depth: training messages in flight per pipeline link (bounded send buffers).
        dist_timeout: seconds a collective or receive may wait for a peer before the job fails.
        precision: ``fp32`` | ``bf16`` | ``fp16``: autocast of every local step and evaluation
            (parameters and optimizer state stay fp32; fp16 scales each layer's loss on its own).
        grad_clip, clip_scope, grad_centralization, loss_warmup_steps, lr_warmup_steps, lr_schedule: the
            update policy (:mod:`localearn.update`); None takes the learner's declaration
            (``learner.update_defaults``), else off / ``layer`` / ``constant``.
        log_every: steps between log points, where losses accumulated on the device are read
            (progress bar, divergence check); the epoch's end is always one.
        data_on_device: ``auto`` | ``on`` | ``off``: hold an in-memory dataset on the device and
            shuffle it there (``auto``: on CUDA when it takes under a quarter of free memory).
        cuda_graphs: with ``compile``, capture each compiled step in a CUDA graph (static shapes).
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    patience: int = 20
    min_delta: float = 0.0
    stop_metric: str | None = None
    restore_best: bool = True
    seed: int = 0
    device: str = "auto"
    warmup_steps: int = 10
    progress: bool = True
    measure_memory: bool = True
    prefix_cache_gb: float = 0.0
    kernels: str = "auto"
    compile: bool = False
    evaluate_test: bool = True
    parallel: str = "none"
    split: str | None = None
    replicas: int = 1
    pipeline_depth: int = 2
    dist_timeout: float = 120.0
    precision: str = "fp32"
    grad_clip: float | None = None
    clip_scope: str | None = None
    grad_centralization: bool | None = None
    loss_warmup_steps: int | None = None
    lr_warmup_steps: int | None = None
    lr_schedule: str | None = None
    log_every: int = 50
    data_on_device: str = "auto"
    cuda_graphs: bool = False

    def validate(self) -> None:
        """Reject nonsense with one clear message."""
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if not (self.prefix_cache_gb >= 0 and math.isfinite(self.prefix_cache_gb)):
            raise ConfigError(f"prefix_cache_gb must be >= 0, got {self.prefix_cache_gb}")
        if self.parallel not in ("none", "pipeline", "ddp"):
            raise ConfigError(f"parallel must be none, pipeline or ddp, got {self.parallel!r}")
        if int(self.replicas) < 1:
            raise ConfigError(f"replicas must be a positive integer, got {self.replicas}")
        if int(self.replicas) > 1 and self.parallel != "pipeline":
            raise ConfigError("replicas copies a layer pipeline: use it with parallel pipeline "
                              "(under ddp every rank is already a replica)")
        if int(self.pipeline_depth) < 1:
            raise ConfigError(f"pipeline_depth must be a positive integer, got {self.pipeline_depth}")
        if not (self.dist_timeout > 0 and math.isfinite(self.dist_timeout)):
            raise ConfigError(f"dist_timeout must be a positive number of seconds, got {self.dist_timeout}")
        if int(self.log_every) < 1:
            raise ConfigError(f"log_every must be a positive integer, got {self.log_every}")
        if self.data_on_device not in ("auto", "on", "off"):
            raise ConfigError(f"data_on_device must be auto, on or off, got {self.data_on_device!r}")
        if self.cuda_graphs and not self.compile:
            raise ConfigError("cuda_graphs captures compiled steps: use it with compile")
        self.policy({})  # the update policy's own checks (precision, clip scope, schedule, ...)
        if self.stop_metric not in (None, "val_loss", "val_acc"):
            raise ConfigError(f"stop_metric must be val_loss or val_acc, got {self.stop_metric!r}")


    def policy(self, declared: Mapping[str, Any]) -> UpdatePolicy:
        """The update policy: these options, else the learner's ``declared`` defaults, else off."""
        keys = ("grad_clip", "clip_scope", "grad_centralization", "loss_warmup_steps", "lr_warmup_steps",
                "lr_schedule")
        chosen = {k: getattr(self, k) if getattr(self, k) is not None else declared.get(k) for k in keys}
        return UpdatePolicy(precision=self.precision, **{k: v for k, v in chosen.items() if v is not None})


def make_optimizer_factory(name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> OptimizerFactory:
    """A factory that gives each layer its own optimizer of one kind and setting."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")

    def factory(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, weight_decay=weight_decay)

    return factory


def resolve_optimizer(config: TrainConfig, default: dict[str, Any]) -> tuple[dict[str, Any], OptimizerFactory]:
    """The optimizer settings a run uses (``config`` over the learner's ``default_optimizer``),
    recorded in ``run.json``, and the factory that builds one such optimizer per layer."""
    settings = {
        "name": config.optimizer or default["name"],
        "lr": config.lr if config.lr is not None else default["lr"],
        "weight_decay": config.weight_decay if config.weight_decay is not None else default.get("weight_decay", 0.0),
    }
    factory = make_optimizer_factory(str(settings["name"]), float(settings["lr"]),
                                     float(settings["weight_decay"]), config.momentum)
    return settings, factory
