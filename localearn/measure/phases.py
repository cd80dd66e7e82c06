"""Named metered windows: ``train``, ``warmup``, ``validate``, ``checkpoint``, ``test``, ``setup``.

docs/concepts/protocol.md#rule-3: training cost is the ``train`` (+ ``warmup``) window only; validation
and checkpoint writes are metered apart (FF's C-pass validation never hides in its training cost).
Window edges synchronise the device, so queued GPU work is charged to the window that launched it.
Other meters (energy) plug in as :class:`Probe` objects told when each window opens and closes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch


class Probe(Protocol):
    """Something measured over the same windows as wall time (e.g. an energy counter).

    Optional: ``attach(meter)``, called once with the :class:`PhaseMeter`, whose ``device`` and
    ``unit`` (the training unit running now) the probe may read.
    """

    def start(self, phase: str) -> None: ...

    def stop(self, phase: str) -> None: ...

    def report(self) -> dict[str, Any]: ...


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


class PhaseMeter:
    """Accumulates wall time per named phase, across windows and across a resumed run."""

    def __init__(self, device: torch.device | str | None = None, probes: list[Probe] | None = None):
        self.device = device
        self.probes: list[Probe] = list(probes or [])
        self.seconds: dict[str, float] = {}
        self.windows: dict[str, int] = {}
        self.unit: str | None = None  # the training unit (stage name) now running; set by the Trainer
        for probe in self.probes:
            attach = getattr(probe, "attach", None)
            if callable(attach):
                attach(self)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Meter the enclosed block as phase ``name``."""
        synchronize(self.device)
        for probe in self.probes:
            probe.start(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            elapsed = time.perf_counter() - t0
            for probe in self.probes:
                probe.stop(name)
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.windows[name] = self.windows.get(name, 0) + 1

    def total(self, *names: str) -> float:
        return sum(self.seconds.get(n, 0.0) for n in names)

    def state(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "windows": dict(self.windows)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seconds = {k: float(v) for k, v in state.get("seconds", {}).items()}
        self.windows = {k: int(v) for k, v in state.get("windows", {}).items()}
