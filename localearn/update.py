"""The update policy: what happens between a local loss and its layer's optimizer step.

docs/concepts/contract.md#update-policy: the update policy belongs to the Trainer and the recipes, not to learners.
Every :meth:`~localearn.layer.LocalLayer.train_step` hands its loss to the layer's
:class:`UpdatePolicy`, which owns, in this order:

1. **precision**: ``fp32``, ``bf16`` or ``fp16`` autocast around the layer's forward and loss
   (parameters and optimizer state stay fp32); fp16 scales the loss with one
   ``torch.amp.GradScaler`` *per layer*, because a shared scaler would skip every layer's step
   whenever one layer overflows, a coupling local learning does not have;
2. **loss warm-up**: the loss times ``(step + 1) / loss_warmup_steps`` for the first steps (CCL's
   released recipe);
3. backward, then the data-parallel gradient average (``layer.grad_sync``, set by ``--parallel ddp``);
4. **gradient centralisation** (Yong et al., ECCV 2020: each weight gradient loses its mean over
   all but the output unit), as the CCL reference applies it;
5. **clipping**: per layer (``clip_scope="layer"``), or network-wide (``"network"``, a declared
   coupling: every layer's gradient is parked after its own backward, and :meth:`finish_step`
   scales all of them by one coefficient per clip group, then steps each layer; CCL's release);
6. the step, and the **learning-rate schedule**: linear warm-up over ``lr_warmup_steps`` steps, then
   ``constant``, ``cosine`` (per epoch of the unit, InfoPro's recipe) or ``cooldown`` (FF's
   ``lr·2(1+E−e)/E`` for e > E/2, loeweX).

Nothing here reads a tensor on the host: the step counter is the Trainer's Python int, and the
network clip coefficient stays on the device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from localearn.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CLIP_SCOPES = ("layer", "network")
LR_SCHEDULES = ("constant", "cosine", "cooldown")


def centralize_gradients(grads: Iterable[Tensor | None]) -> None:
    """Gradient centralisation: each weight gradient (dim > 1) loses its mean over all but dim 0."""
    with torch.no_grad():
        for g in grads:
            if g is not None and g.dim() > 1:
                g -= g.mean(dim=tuple(range(1, g.dim())), keepdim=True)


@dataclass
class UpdatePolicy:
    """One run's update policy (see the module docstring); the Trainer builds it from TrainConfig.

    Attributes:
        precision: ``fp32`` | ``bf16`` | ``fp16``.
        grad_clip: max gradient norm (0: off). clip_scope: ``layer`` | ``network``.
        grad_centralization: centralise weight gradients before clipping.
        loss_warmup_steps: linear loss warm-up length in steps (0: off).
        lr_warmup_steps: linear learning-rate warm-up length in steps (0: off).
        lr_schedule: ``constant`` | ``cosine`` | ``cooldown`` (per epoch of the training unit).
        step: the Trainer's step counter (steps taken so far in the run).
    """

    precision: str = "fp32"
    grad_clip: float = 0.0
    clip_scope: str = "layer"
    grad_centralization: bool = False
    loss_warmup_steps: int = 0
    lr_warmup_steps: int = 0
    lr_schedule: str = "constant"
    step: int = 0
    _scalers: dict[int, Any] = field(default_factory=dict, repr=False)
    _parked: list[tuple[torch.optim.Optimizer, Any, list[tuple[str, Tensor, Tensor]]]] = field(
        default_factory=list, repr=False)
    _epoch_factor: float = field(default=1.0, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.clip_scope not in CLIP_SCOPES:
            raise ConfigError(f"clip_scope must be layer or network, got {self.clip_scope!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        for key in ("grad_clip", "loss_warmup_steps", "lr_warmup_steps"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{key} must be >= 0, got {value}")

    def attach(self, module: nn.Module) -> UpdatePolicy:
        """Make every local layer inside ``module`` step under this policy; returns the policy."""
        for layer in module.modules():
            if hasattr(layer, "update") and hasattr(layer, "grad_sync"):  # a LocalLayer
                layer.update = self  # type: ignore[assignment]
        return self

    @property
    def coupled(self) -> bool:
        """Whether the policy couples layers' updates (the network-wide clip)."""
        return self.clip_scope == "network" and self.grad_clip > 0

    # ----------------------------------------------------------------------------- forward
    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """Autocast at this run's precision (nothing for fp32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            yield
            return
        with torch.autocast(device.type, dtype=dtype):
            yield

    def _scaler(self, layer: nn.Module, device: torch.device) -> Any:
        if self.precision != "fp16":
            return None
        if id(layer) not in self._scalers:  # one per layer: overflow in one never skips another
            self._scalers[id(layer)] = torch.amp.GradScaler(device.type)
        return self._scalers[id(layer)]

    # ---------------------------------------------------------------------------- backward
    def apply(self, layer: Any, loss: Tensor) -> None:
        """Backward ``loss`` and step ``layer.optimizer`` under this policy."""
        opt = layer.optimizer
        if self.loss_warmup_steps > 0 and self.step < self.loss_warmup_steps:
            loss = loss * ((self.step + 1) / self.loss_warmup_steps)
        scaler = self._scaler(layer, loss.device)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if layer.grad_sync is not None:  # data parallel: average before anything reads the gradient
            layer.grad_sync(layer)
        if scaler is not None:
            scaler.unscale_(opt)
        grads = [(str(group.get("clip_group", "all")), p) for group in opt.param_groups
                 for p in group["params"] if p.grad is not None]
        if self.grad_centralization:
            centralize_gradients(p.grad for _, p in grads)
        if self.coupled:  # park: the step happens in finish_step, after every layer's backward
            self._parked.append((opt, scaler, [(key, p, p.grad) for key, p in grads]))
            for _, p in grads:
                p.grad = None
            return
        if self.grad_clip > 0:  # per clip group of the layer (CCL's pair: one per network side)
            for key in dict.fromkeys(k for k, _ in grads):
                nn.utils.clip_grad_norm_([p for k, p in grads if k == key], self.grad_clip)
        self._step(opt, scaler)

    @staticmethod
    def _step(opt: torch.optim.Optimizer, scaler: Any) -> None:
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def finish_step(self) -> None:
        """After a learner's step: the network-wide clip (one norm per clip group over every
        parked gradient, torch's ``clip_grad_norm_`` rule, on the device), then each layer steps
        with only its own gradients restored; then the step counter and the lr warm-up advance."""
        parked, self._parked = self._parked, []
        if parked:
            # Under fp16 a layer whose scaled gradient overflowed skips its own step (its scaler saw
            # the inf at unscale_); its inf must not enter the others' norm, or inf/inf = NaN reaches them.
            norms = [[(k, torch.linalg.vector_norm(g)) for k, _, g in group] for _, _, group in parked]
            entries = []
            for (_, scaler, _), layer in zip(parked, norms, strict=True):
                ok = torch.stack([torch.isfinite(n) for _, n in layer]).all() if scaler is not None else None
                entries += [(k, n if ok is None else torch.where(ok, n, torch.zeros_like(n))) for k, n in layer]
            coef: dict[str, Tensor] = {}
            for key in {k for k, _ in entries}:
                total = torch.linalg.vector_norm(torch.stack([n for k, n in entries if k == key]))
                coef[key] = (self.grad_clip / (total + 1e-6)).clamp(max=1.0)
            for opt, scaler, group in parked:
                for key, p, grad in group:
                    p.grad = grad.mul_(coef[key])
                self._step(opt, scaler)
        self.step += 1

    # --------------------------------------------------------------------------- schedules
    def start_epoch(self, optimizers: Iterable[torch.optim.Optimizer], epoch: int, epochs: int) -> None:
        """Set every optimizer's lr for 1-based ``epoch`` of a unit of at most ``epochs``."""
        if self.lr_schedule == "cooldown":  # min(1, ·): for odd E the first cooled epoch would exceed 1
            self._epoch_factor = min(1.0, 2.0 * (1 + epochs - epoch) / epochs) if epoch > epochs / 2 else 1.0
        elif self.lr_schedule == "cosine":
            self._epoch_factor = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(epochs, 1)))
        else:
            self._epoch_factor = 1.0
        self.set_lr(optimizers)

    def set_lr(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Every group's lr = its base lr x the epoch factor x the warm-up factor (Python floats)."""
        warm = min(1.0, (self.step + 1) / self.lr_warmup_steps) if self.lr_warmup_steps > 0 else 1.0
        for opt in optimizers:
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])  # saved with the optimizer: a resume keeps it
                group["lr"] = group["initial_lr"] * self._epoch_factor * warm

    def in_lr_warmup(self) -> bool:
        """Whether the lr warm-up still changes the lr at the next step."""
        return self.lr_warmup_steps > 0 and self.step < self.lr_warmup_steps

    def record(self) -> dict[str, Any]:
        """What run.json records under ``update``."""
        out = {k: getattr(self, k) for k in ("precision", "grad_clip", "clip_scope", "grad_centralization",
                                             "loss_warmup_steps", "lr_warmup_steps", "lr_schedule")}
        if self.coupled:
            out["coupling"] = "network-wide gradient clip: one norm over every layer's gradient per clip group"
        return out


PLAIN = UpdatePolicy()  # a layer trained outside a Trainer: fp32, no clip, no schedule
