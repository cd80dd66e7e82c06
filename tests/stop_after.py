"""A callback that presses Ctrl-C after a given epoch (tests of interrupted and resumed runs)."""

from __future__ import annotations

from localearn import Callback, Trainer


class StopAfter(Callback):
    """Raise ``KeyboardInterrupt`` at the end of global epoch ``epochs``, as Ctrl-C would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: Trainer, stage: object, record: dict) -> None:
        if record["global_epoch"] == self.epochs:
            raise KeyboardInterrupt
