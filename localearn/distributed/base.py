"""What every training strategy gives the Trainer: :class:`Parallel` (one process) and
:class:`RankBase` (a rank of a ``torchrun`` job: identity, per-rank checkpoints agreed at resume,
deferred divergence, the gathered summary, teardown).

The Trainer calls a strategy at a few points (``setup``, ``batches``, ``step``, ``evaluate``,
``check``, ``end_epoch``, ``summary``, ``close``); the pipeline (:mod:`.pipeline`) and data
parallelism (:mod:`.ddp`) derive from :class:`RankBase`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from localearn.checkpoint import PREVIOUS_NAME, load_checkpoint
from localearn.distributed.transport import guarded
from localearn.errors import ConfigError, LocalearnError
from localearn.outcome import Diverged


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

    def close(self, finished: bool = True) -> None:
        """Leave the process group (``finished``: the run completed or diverged on every rank)."""


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
        if self._diverged is None:
            try:
                test(*args)
            except Diverged as exc:
                self._diverged = {**exc.info, "rank": self.rank}

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a collective); a peer lost meanwhile is one clear error."""
        out: list[Any] = [None] * self.world_size
        guarded(self.rank, "a peer", lambda: dist.all_gather_object(out, obj))
        return out

    def agree(self) -> None:
        """Raise ``Diverged`` on every rank if any rank diverged this epoch (the lowest rank's info)."""
        infos = self.gather(self._diverged)
        first = next((i for i in infos if i is not None), None)
        if first is not None:
            self._diverged = None
            exc = Diverged(first["unit"], first["layer"], first["epoch"], first["reason"], first["step"])
            exc.info["rank"] = first["rank"]
            raise exc

    def agree_checkpoint(self, path: Path) -> Path:
        """Ranks save at the same points of the loop (after an epoch's collectives, at a unit's
        end), so at most one of them is one checkpoint ahead (killed between two ranks' saves);
        that one steps back to its previous file. Checkpoints are compared by their place in the
        loop, which every rank advances together: a greedy pipeline's later ranks take no steps
        while an earlier unit trains, so step counts differ between ranks (issue #23, S2)."""
        prev = path.with_name(PREVIOUS_NAME)
        mine = _place(path)
        if mine is None:  # killed between moving the old file aside and writing the new one
            path, mine = prev, _place(prev)
        everyone = self.gather(mine)
        if any(p is None for p in everyone):
            raise ConfigError(f"rank {self.rank}: rank {everyone.index(None)} has no checkpoint to resume from; "
                              "start the run afresh")
        target = min(everyone)
        if mine == target:
            return path
        if _place(prev) != target:
            raise ConfigError(f"rank {self.rank}: no checkpoint at unit {target[0]}, epoch {target[1]} that every "
                              f"rank has (ranks are at {[tuple(p[:2]) for p in everyone]}); start the run afresh")
        return prev

    def summary(self, trainer: Any) -> dict[str, Any]:
        mine = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
                "train_seconds": trainer.meter.total("warmup", "train"), "samples": trainer.state.samples,
                **self.traffic(), **self.rank_info(), "energy": _rank_energy(trainer)}
        ranks = self.gather(mine)
        return {"mode": self.mode, "world_size": self.world_size, "backend": dist.get_backend(),
                "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), "ranks": ranks,
                "train_joules_all_ranks": summed_energy(ranks)}

    def rank_info(self) -> dict[str, Any]:
        """Mode-specific fields of this rank's summary."""
        return {}

    def traffic(self) -> dict[str, Any]:
        """``bytes_sent`` and ``wait_seconds`` (blocked on a peer) of this rank so far."""
        raise NotImplementedError

    def close(self, finished: bool = True) -> None:
        """Leave the process group; every way a run ends comes here (``localearn.run.fit``'s
        ``finally``; :func:`leave` at exit for anything else). A finished run (complete or
        diverged: every rank got there together) drains its sends and meets the others at a
        barrier first, because a rank that tears its gloo connections down while a peer is still
        inside a collective can abort that peer. An interrupted or failed run leaves at once: its
        peers may be dead or elsewhere in the loop, and learn of it as a lost peer."""
        if not dist.is_initialized():
            return
        try:
            if finished:
                self.link_flush()
                guarded(self.rank, "a peer at the final barrier", dist.barrier)
        except LocalearnError:
            pass  # the run's record is written; a peer that left early reports its own exit
        finally:
            dist.destroy_process_group()

    def link_flush(self) -> None:
        """Wait for this rank's sends still in flight (the pipeline's)."""



def _place(path: Path) -> tuple[int, int, int] | None:
    """A checkpoint's place in the loop: (unit index, global epoch, diverged); None: no file.
    Every checkpoint format has these fields, so older run directories resume too."""
    if not path.is_file():
        return None
    state = load_checkpoint(path)["trainer"]
    return int(state["stage_index"]), int(state["global_epoch"]), int(state.get("diverged") is not None)


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
