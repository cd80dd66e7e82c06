"""The Trainer's resumable state and its checkpoint: what ``checkpoint.pt`` holds, and back.

A checkpoint is written atomically after every epoch (and at the end of every unit); it holds the
model, every optimizer, the unit's best state so far, the loop's counters and history, and the
meters, so ``--resume`` continues exactly where the last completed epoch left off. Under
``--parallel`` each rank writes its own and keeps the one before (:mod:`localearn.distributed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from localearn.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from localearn.errors import LocalearnError
from localearn.measure import peak_rss_bytes
from localearn.rundir import state_dict_problem


@dataclass
class TrainState:
    """Everything needed to resume exactly where the last completed epoch left off."""

    stage_index: int = 0
    epoch_in_stage: int = 0
    global_epoch: int = 0
    steps: int = 0
    samples: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    diverged: dict[str, Any] | None = None
    best_state_metrics: dict[str, Any] | None = None


def save(trainer: Any) -> None:
    """Write ``trainer``'s checkpoint (metered in the ``checkpoint`` window); no-op without out_dir."""
    if trainer.out_dir is None:
        return
    state: TrainState = trainer.state
    with trainer.meter.phase("checkpoint"):
        save_checkpoint(
            {
                "run": trainer.run_info,
                "config": asdict(trainer.config),
                "model": trainer.learner.state_dict(),
                "optimizers": [opt.state_dict() for opt in trainer.optimizers],
                "best_state": trainer._best_state,
                "trainer": asdict(state),
                "meters": {"phases": trainer.meter.state(), "saved": trainer.saved.state(),
                           "peak_rss_bytes": peak_rss_bytes(), "cuda_peaks": trainer.cuda_peaks},
                "complete": state.stage_index >= len(trainer.stages) and state.diverged is None,
            },
            trainer.par.checkpoint_dir(trainer.out_dir) / CHECKPOINT_NAME,
            keep_previous=trainer.par.mode != "none",  # ranks agree on a common one at resume
        )


def load_weights(module: Any, state: Any, path: str | Path) -> None:
    """``module.load_state_dict(state)``; weights that do not fit are one clear error."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LocalearnError(f"checkpoint {path} holds no model weights")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise LocalearnError(f"checkpoint {path} does not fit this learner: {state_dict_problem(exc)}") from None


def restore(trainer: Any, path: str | Path) -> None:
    """Load a checkpoint written by :func:`save` into ``trainer`` (weights-only, see checkpoint.py);
    a checkpoint that lacks a part, or whose parts do not fit this run, is one clear error."""
    path = trainer.par.agree_checkpoint(Path(path))
    ckpt = load_checkpoint(path, map_location=trainer.device)
    load_weights(trainer.learner, ckpt.get("model"), path)
    try:
        for opt, opt_state in zip(trainer.optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        best = ckpt.get("best_state")
        if best is not None and not (isinstance(best, dict) and all(torch.is_tensor(v) for v in best.values())):
            raise TypeError("its best_state is not a table of tensors")
        trainer._best_state = best
        trainer.state = TrainState(**ckpt["trainer"])
        meters = ckpt["meters"]
        trainer.meter.load_state(meters["phases"])
        trainer.saved.load_state(meters["saved"])
        trainer.resumed_rss = int(meters.get("peak_rss_bytes", 0))
        trainer.cuda_peaks = dict(meters.get("cuda_peaks", {}))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:200]
        raise LocalearnError(f"checkpoint {path} cannot be resumed: {what}") from None
