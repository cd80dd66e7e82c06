"""Training past one process: layer pipelines and data parallelism on ``torch.distributed``.

Because no gradient crosses a layer, a local learner's layers can live on different processes
and exchange only detached activations, forward (DESIGN.md, "Scaling past one machine"). Two
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

import os
import socket
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from localearn.errors import ConfigError

MODES = ("none", "pipeline", "ddp")


class Parallel:
    """One process: every hook is the identity (the Trainer's default)."""

    mode = "none"
    rank = 0
    world_size = 1
    layer_scores = True  # each layer's own accuracy at the end (a pipeline rank holds only some)

    @property
    def is_main(self) -> bool:
        """The rank that prints, writes ``run.json`` and reports."""
        return self.rank == 0

    def setup(self, trainer: Any) -> None:
        """Adapt the learner after its optimizers exist (drop other ranks' layers, hook gradients)."""

    def batches(self, batches: Iterable[Any], stage: Any) -> Iterable[Any]:
        """The training batches this rank steps on in one epoch."""
        return batches

    def step(self, learner: Any, batch: Any, stage: Any) -> dict[str, torch.Tensor]:
        """One training step of this rank."""
        return dict(learner.train_step(batch, stage))

    def evaluate(self, trainer: Any, split: str, stage: Any) -> dict[str, float] | None:
        """The split's loss and metric, equal on every rank; None: the Trainer's own evaluation."""
        return None

    def check(self, test: Callable[..., None], *args: Any) -> None:
        """Run an outcome check (it raises ``outcome.Diverged``); ranks defer it (see RankBase)."""
        test(*args)

    def end_epoch(self, trainer: Any) -> None:
        """After an epoch's last step: drain sends, check that replicas agree."""

    def checkpoint_dir(self, out_dir: Path) -> Path:
        """Where this rank's ``checkpoint.pt`` lives."""
        return out_dir

    def agree_checkpoint(self, path: Path) -> Path:
        """The checkpoint every rank resumes from (the newest that all ranks have)."""
        return path

    def summary(self, trainer: Any) -> dict[str, Any] | None:
        """``run.json``'s ``distributed`` entry (a collective: every rank calls it)."""
        return None

    def close(self) -> None:
        """Leave the process group."""


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
        from localearn.distributed.pipeline import PipelineParallel

        return PipelineParallel(config, device), device
    from localearn.distributed.ddp import DataParallel

    return DataParallel(config, device), device


def _join(config: Any, backend: str) -> None:
    """Join the process group through the launcher's store, under a prefix per restart round:
    after ``torchrun --max-restarts`` relaunches the workers, the store still holds the previous
    round's gloo addresses, and a rank that reads them first fails to connect (measured here)."""
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


class RankBase(Parallel):
    """What both modes share: rank identity, per-rank checkpoints, the gathered summary."""

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config, self.device = config, device
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._diverged: dict[str, Any] | None = None

    def checkpoint_dir(self, out_dir: Path) -> Path:
        return out_dir / f"rank{self.rank}"

    def check(self, test: Callable[..., None], *args: Any) -> None:
        """A rank whose loss or parameters turn non-finite keeps stepping (its peers are mid-epoch
        and would wait on it) and raises at the epoch's end, with every other rank (:meth:`agree`)."""
        from localearn.outcome import Diverged

        if self._diverged is None:
            try:
                test(*args)
            except Diverged as exc:
                self._diverged = {**exc.info, "rank": self.rank}

    def agree(self) -> None:
        """Raise ``Diverged`` on every rank if any rank diverged this epoch (the lowest rank's info)."""
        from localearn.outcome import Diverged

        infos: list[Any] = [None] * self.world_size
        dist.all_gather_object(infos, self._diverged)
        first = next((i for i in infos if i is not None), None)
        if first is not None:
            self._diverged = None
            exc = Diverged(first["unit"], first["layer"], first["epoch"], first["reason"], first["step"])
            exc.info["rank"] = first["rank"]
            raise exc

    def agree_checkpoint(self, path: Path) -> Path:
        """Ranks save after the same epoch's collective, so at most one of them is one checkpoint
        ahead (killed between two ranks' saves); that one steps back to its previous file."""
        from localearn.checkpoint import PREVIOUS_NAME, load_checkpoint

        def steps(p: Path) -> int:
            return int(load_checkpoint(p)["trainer"]["steps"]) if p.is_file() else -1

        prev = path.with_name(PREVIOUS_NAME)
        mine = steps(path)
        if mine < 0:  # killed between moving the old file aside and writing the new one
            path, mine = prev, steps(prev)
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        target = min(everyone)
        if mine == target:
            return path
        if steps(prev) != target:
            raise ConfigError(f"rank {self.rank}: no checkpoint at step {target} that every rank has "
                              f"(ranks are at {everyone}); start the run afresh")
        return prev

    def summary(self, trainer: Any) -> dict[str, Any]:
        mine = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
                "train_seconds": trainer.meter.total("warmup", "train"), "samples": trainer.state.samples,
                **self.traffic(), **self.rank_info(), "energy": _rank_energy(trainer)}
        ranks: list[Any] = [None] * self.world_size
        dist.all_gather_object(ranks, mine)
        return {"mode": self.mode, "world_size": self.world_size, "backend": dist.get_backend(),
                "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), "ranks": ranks,
                "train_joules_all_ranks": summed_energy(ranks)}

    def rank_info(self) -> dict[str, Any]:
        """Mode-specific fields of this rank's summary."""
        return {}

    def traffic(self) -> dict[str, Any]:
        """``bytes_sent`` and ``wait_seconds`` (blocked on a peer) of this rank so far."""
        raise NotImplementedError

    def close(self) -> None:
        """Leave together: a rank that tears its gloo connections down while a peer is still
        inside a collective can abort that peer's process at exit."""
        if dist.is_initialized():
            self.link_flush()
            dist.barrier()
            dist.destroy_process_group()

    def link_flush(self) -> None:
        """Wait for this rank's sends still in flight (the pipeline's)."""



def _rank_energy(trainer: Any) -> dict[str, Any] | None:
    """This rank's energy headline (``metrics.energy`` holds rank 0's alone), or None unmetered."""
    for probe in trainer.meter.probes:
        energy = probe.report().get("energy")
        if energy is not None:
            keys = ("method", "scope", "train_joules", "train_adjusted_joules", "total_joules", "reason")
            return {k: energy[k] for k in keys if k in energy}
    return None


def summed_energy(ranks: list[Any]) -> float | None:
    """Σ train joules over ranks when each rank metered its own GPU (NVML, one GPU per rank); None
    otherwise: a CPU meter (RAPL) reads the whole package, so ranks sharing it would count twice."""
    got = [r.get("energy") or {} for r in ranks]
    if all(str(e.get("method", "")).startswith("nvml") and e.get("train_joules") is not None for e in got):
        return float(sum(e["train_joules"] for e in got))
    return None
