"""Training losses kept on the device and read only at log points.

docs/guides/precision.md ("No host sync in the step"): on a GPU every ``float(loss)`` waits for the
device, so the host can never run ahead. A learner's step returns its losses as device tensors;
:class:`LossLog` adds them into device-side sums, and the Trainer reads them only at log points
(every ``log_every`` steps and at the epoch's end), in one transfer. A non-finite loss makes its
layer's sum non-finite, so the divergence check at the log point names the layer: the run stops
within ``log_every`` steps of the first bad step instead of at it, and the record says at which
log point it was seen.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LossLog:
    """Device-side sums of one epoch's losses, per key, with a window since the last log point."""

    def __init__(self) -> None:
        self._epoch: dict[str, Tensor] = {}
        self._window: dict[str, Tensor] = {}
        self.steps = 0
        self.window_steps = 0
        self.last: dict[str, float] = {}

    def add(self, logs: dict[str, Tensor]) -> None:
        """Add one step's losses (0-dim tensors; Python numbers are accepted too)."""
        for key, value in logs.items():
            v = value.detach().float() if isinstance(value, Tensor) else torch.tensor(float(value))
            self._window[key] = v if key not in self._window else self._window[key] + v
        self.window_steps += 1

    def read(self) -> dict[str, float]:
        """The window's mean per key, in one host transfer; the window joins the epoch's sums."""
        if not self._window:
            return {}
        keys = list(self._window)
        stacked = torch.stack([self._window[k].to(self._window[keys[0]].device) for k in keys])
        means = (stacked / self.window_steps).tolist()  # the log point's one conversion
        for k in keys:
            self._epoch[k] = self._window[k] if k not in self._epoch else self._epoch[k] + self._window[k]
        self.steps += self.window_steps
        self._window, self.window_steps = {}, 0
        self.last = dict(zip(keys, means, strict=True))
        return self.last

    def epoch_mean(self, key: str = "loss") -> float:
        """The epoch's mean of ``key`` (read the window first)."""
        self.read()
        if key not in self._epoch or not self.steps:
            return float("nan")
        return float(self._epoch[key]) / self.steps
