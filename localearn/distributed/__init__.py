"""Training past one process: layer pipelines and data parallelism on ``torch.distributed``.

Because no gradient crosses a layer, a local learner's layers can live on different processes
and exchange only detached activations, forward (docs/concepts/architecture.md#scaling). Two
modes, chosen by ``TrainConfig.parallel`` and launched by ``torchrun`` (gloo on CPU, NCCL on
CUDA):

* ``pipeline`` (:mod:`.pipeline`): rank r holds a contiguous group of layers, receives the
  previous group's detached output and the batch's context, runs its slice of the learner's chain
  and sends its output on, with several batches in flight.
* ``ddp`` (:mod:`.ddp`): every rank holds the whole learner and a slice of every batch; each
  layer's gradient is averaged across ranks inside ``LocalLayer.train_step`` before that layer's
  own optimizer steps.
* ``pipeline`` with ``replicas`` D > 1: both at once, D copies of a pipeline, each copy of a
  layer group averaging its gradients with the other copies of that group (:class:`.ddp.Replicas`).

The Trainer calls a strategy object at five points (``setup``, ``batches``, ``step``,
``evaluate``, ``summary``); :class:`Parallel` is the single-process identity, so the loop in
``localearn/trainer.py`` is the same in every mode.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from localearn.distributed.base import Parallel, RankBase, summed_energy
from localearn.distributed.ddp import DataParallel
from localearn.distributed.pipeline import PipelineParallel
from localearn.errors import ConfigError

MODES = ("none", "pipeline", "ddp")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets the env)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's rank from the launcher's environment (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0"))


def rank_dir(out: str | Path, parallel: str) -> Path:
    """Where a run's checkpoint lives for this process: ``out/rank<r>`` under a parallel mode."""
    return Path(out) / f"rank{env_rank()}" if parallel != "none" else Path(out)


def restarted() -> bool:
    """Whether ``torchrun --max-restarts`` has restarted this worker group (then runs resume)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def make_parallel(config: Any, device: torch.device) -> tuple[Parallel, torch.device]:
    """The strategy for ``config.parallel`` (joining the process group) and this rank's device."""
    mode = config.parallel
    if mode == "none":
        return Parallel(), device
    if mode not in MODES:
        raise ConfigError(f"unknown parallel mode {mode!r}; valid: {', '.join(MODES)}")
    if not launched():
        raise ConfigError(f"--parallel {mode} runs under torchrun: torchrun --nproc-per-node N -m localearn "
                          f"train --parallel {mode} ...")
    if device.type == "cuda":  # one GPU per local rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        _join(config, "nccl" if device.type == "cuda" else "gloo")
    if mode == "pipeline":
        return PipelineParallel(config, device), device
    return DataParallel(config, device), device


def _join(config: Any, backend: str) -> None:
    """Join the process group through the launcher's store, under a prefix per restart round:
    after ``torchrun --max-restarts`` relaunches the workers, the store still holds the previous
    round's gloo addresses, and a rank that reads them first fails to connect (measured here)."""
    atexit.register(leave)  # a run that fails before fit's teardown still leaves the group
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = timedelta(seconds=config.dist_timeout)
    round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if round_ == "0":  # the first round: the launcher's environment as it is
        dist.init_process_group(backend, timeout=timeout)
        return
    hosted = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"  # torchrun's agent
    store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")),
                          world, is_master=rank == 0 and not hosted, timeout=timeout)
    dist.init_process_group(backend, store=dist.PrefixStore(f"localearn/round{round_}", store),
                            rank=rank, world_size=world, timeout=timeout)


def leave() -> None:
    """Destroy the process group if this process still belongs to one (registered at exit when
    :func:`_join` joined it): a process that exits without it can be aborted by gloo's threads
    during interpreter shutdown (``terminate called without an active exception``, SIGABRT)."""
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()




__all__ = ["MODES", "DataParallel", "Parallel", "PipelineParallel", "RankBase", "env_rank", "launched", "leave",
           "make_parallel", "rank_dir", "restarted", "summed_energy"]
