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

from localearn.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from localearn.errors import LocalearnError
from localearn.measure import peak_rss_bytes


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


def restore(trainer: Any, path: str | Path) -> None:
    """Load a checkpoint written by :func:`save` into ``trainer`` (weights-only, see checkpoint.py)."""
    ckpt = load_checkpoint(trainer.par.agree_checkpoint(Path(path)), map_location=trainer.device)
    try:
        trainer.learner.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise LocalearnError(f"checkpoint {path} does not fit this learner: {exc}") from exc
    for opt, opt_state in zip(trainer.optimizers, ckpt["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    trainer._best_state = ckpt.get("best_state")
    trainer.state = TrainState(**ckpt["trainer"])
    trainer.meter.load_state(ckpt["meters"]["phases"])
    trainer.saved.load_state(ckpt["meters"]["saved"])
    trainer.resumed_rss = int(ckpt["meters"].get("peak_rss_bytes", 0))
    trainer.cuda_peaks = dict(ckpt["meters"].get("cuda_peaks", {}))
