"""Honest run outcomes: a run ends ``complete``, ``interrupted`` or ``diverged``.

A non-finite training loss or parameter stops the training unit (docs/concepts/protocol.md: a number
computed from a broken model is no result). The checks cost no per-step device sync: the losses
stay on the device (:class:`localearn.losslog.LossLog`) and are tested at each log point (every
``log_every`` steps and at the epoch's end; a non-finite loss makes its layer's window mean
non-finite, so the layer is named), and the unit's parameters and floating buffers once per
epoch. A unit whose validation metric never became finite diverged too.

What a diverged run reports: ``status = "diverged"`` and ``diverged = {"unit", "layer", "epoch",
"reason", "step"}`` (``layer`` is null when the validation metric of a whole unit is to blame);
``metrics`` holds no test or validation score. If the unit had a best state from an earlier, finite
epoch, that state is restored and evaluated under ``best_state_metrics`` (labelled as such: it is
not a result of the configured run). ``localearn train`` exits with :data:`EXIT_DIVERGED`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from localearn.layer import LocalLayer

STATUSES = ("complete", "interrupted", "diverged")
EXIT_DIVERGED = 3  # `localearn train` exit status of a diverged run (2: bad input, 130: Ctrl-C)


class Diverged(Exception):
    """Raised inside the loop when a unit diverges; carries what ``run.json`` reports."""

    def __init__(self, unit: str, layer: str | None, epoch: int, reason: str, step: int) -> None:
        super().__init__(f"{unit} diverged at epoch {epoch}: {reason}")
        self.info = {"unit": unit, "layer": layer, "epoch": epoch, "reason": reason, "step": step}


def _nonfinite(tensors: Iterable[torch.Tensor]) -> bool:
    flags = [~torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).any()) if flags else False


def first_nonfinite_layer(layers: Iterable[LocalLayer]) -> str | None:
    """The name of the first layer holding a non-finite parameter or floating buffer, or None."""
    for layer in layers:
        if _nonfinite([*layer.parameters(), *layer.buffers()]):
            return layer.layer_name
    return None


def check_step(logs: dict[str, float], layers: list[LocalLayer], unit: str, epoch: int, step: int) -> None:
    """Raise :class:`Diverged` when a loss that ``train_step`` returned is not finite.

    The layer is the one whose own ``loss/<layer>`` entry is non-finite, else the first of the
    unit's layers whose parameters are, else the first layer of the unit.
    """
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if not bad:
        return
    names = [layer.layer_name for layer in layers]
    named = [k.split("/", 1)[1] for k in bad if k.startswith("loss/") and k.split("/", 1)[1] in names]
    layer = named[0] if named else first_nonfinite_layer(layers) or (names[0] if names else None)
    key = f"loss/{layer}" if f"loss/{layer}" in bad else next(iter(bad))
    raise Diverged(unit, layer, epoch, f"non-finite training loss ({key} = {bad[key]})", step)


def check_parameters(layers: list[LocalLayer], unit: str, epoch: int, step: int) -> None:
    """Raise :class:`Diverged` when one of the unit's layers holds a non-finite value."""
    layer = first_nonfinite_layer(layers)
    if layer is not None:
        raise Diverged(unit, layer, epoch, "non-finite parameter or buffer after the epoch", step)


def never_finite(unit: str, metric: str, epochs: int, step: int) -> Diverged:
    """The unit's validation metric was not finite in any of its epochs."""
    return Diverged(unit, None, epochs, f"validation {metric} never became finite in {epochs} epoch(s)", step)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the CLI prints for a diverged run instead of a test accuracy."""
    d = result.get("diverged") or {}
    where = f"unit {d.get('unit')}" + (f", layer {d['layer']}" if d.get("layer") else "")
    lines = [f"  DIVERGED             {where}, epoch {d.get('epoch')}: {d.get('reason')}",
             "  test accuracy        not reported (the run diverged)"]
    best = result.get("best_state_metrics")
    if best:
        lines.append(f"  best restored state  test accuracy {best['test_accuracy']:.4f} (unit {best['unit']} "
                     f"epoch {best['best_epoch']}; not a result of this run)")
    return lines


def record_divergence(trainer: Any, info: dict[str, Any]) -> None:
    """Record the divergence in ``trainer.state``; evaluate the unit's best finite state apart,
    if there is one, labelled as not a result of the run; checkpoint."""
    st = trainer.state
    st.diverged = info
    if trainer._best_state is not None:
        trainer.learner.load_state_dict(trainer._best_state)
        with trainer.meter.phase("test"):
            test, val = trainer.evaluate("test"), trainer.evaluate("val")
        metric = trainer.task.metric
        st.best_state_metrics = {
            "unit": info["unit"], "best_epoch": st.best_epoch + 1,
            f"test_{metric}": test[metric], "test_loss": test["loss"],
            f"val_{metric}": val[metric], "val_loss": val["loss"],
            "note": "the restored best state of the diverged unit; not a result of this run",
        }
    trainer._checkpoint()


class StepInterrupt:
    """Ctrl-C (and, in one process, SIGTERM) take effect at the next step boundary.

    Python runs a signal handler between bytecodes of whatever code is executing; when that is a
    finaliser (the saved-tensor meter releases bytes in ``__del__``), the KeyboardInterrupt is
    printed as "Exception ignored" and lost, and training goes on. So the first signal only sets
    :attr:`requested`; the Trainer raises KeyboardInterrupt after the current step, and the run is
    saved as ``interrupted``. A second Ctrl-C interrupts at once. Under ``torchrun`` SIGTERM is
    left alone: the agent uses it to stop ranks that may be blocked on a peer.
    """

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self, sigterm: bool) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # handlers: main thread only
            yield
            return
        signals = [signal.SIGINT] + ([signal.SIGTERM] if sigterm else [])
        before = {s: signal.getsignal(s) for s in signals}

        def handler(signum: int, frame: object) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True

        for s in signals:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in before.items():
                signal.signal(s, h)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived (called between steps)."""
        if self.requested:
            raise KeyboardInterrupt
