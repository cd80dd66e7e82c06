"""CCL's gradient clipping: per pair side, or the released network-wide clip via parked gradients.

Kao & Hariharan, *Counter-Current Learning*, NeurIPS 2024, arXiv 2409.19841 (ALGORITHMS.md §6.1).
With ``clip_scope="network"`` each pair's backward still runs and frees its graph on its own, but
its gradient is *parked* (moved out of ``.grad``) by the optimizer's step pre-hook; after the last
pair, :meth:`NetworkClip._apply_parked` clips over the whole forward and the whole feedback network
and steps each pair with only its own gradient restored and scaled. The shared coefficient is the
coupling the learner declares (``block_local = False``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class NetworkClip:
    """Mixin for :class:`~localearn.algorithms.counter_current.CounterCurrent` (needs
    ``grad_clip``, ``clip_scope``, ``grad_centralization``, ``_parked`` and ``_applying``)."""

    grad_clip: float
    clip_scope: str
    grad_centralization: bool
    _parked: dict[torch.optim.Optimizer, list[tuple[str, Tensor, Tensor]]]
    _applying: bool

    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Per pair: gradient centralisation, then clipping per side; or park for the network clip.

        With ``clip_scope="network"`` the pair's gradients are *parked* (moved out of ``.grad``),
        so the step that follows skips every parameter (torch optimizers skip ``grad is None``).
        :meth:`_apply_parked` then clips over the whole forward and the whole feedback network and
        steps each pair with only its own gradients restored.
        """
        if self._applying:  # the parked step: already centralised and clipped
            return
        if self.grad_clip > 0 and self.clip_scope == "network":
            parked = self._parked.setdefault(opt, [])
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        parked.append((group["side"], p, p.grad))
                        p.grad = None
            return
        for group in opt.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if self.grad_centralization:
                centralize_gradients([p.grad for p in params])
            if self.grad_clip > 0 and params:
                nn.utils.clip_grad_norm_(params, self.grad_clip)

    @torch.no_grad()
    def _apply_parked(self) -> None:
        """The reference's update: one norm clip per network over every pair's gradient, then step.

        Each pair's gradient came from its own loss only (they were parked one pair at a time);
        the shared clip coefficient is the only coupling, exactly as released (ALGORITHMS §6.1).
        """
        parked, self._parked = self._parked, {}
        entries = [entry for pair in parked.values() for entry in pair]
        if self.grad_centralization:
            centralize_gradients([grad for _, _, grad in entries])
        coef = {}
        for side in ("f", "g"):
            norms = [torch.linalg.vector_norm(grad) for sd, _, grad in entries if sd == side]
            total = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
            coef[side] = min(1.0, self.grad_clip / (total + 1e-6))  # torch's clip_grad_norm_ rule
        self._applying = True
        try:
            for opt, pair in parked.items():  # each pair in turn, with only its own gradients
                for side, p, grad in pair:
                    p.grad = grad.mul_(coef[side])
                opt.step()
                opt.zero_grad(set_to_none=True)
        finally:
            self._applying = False



def warmup_scale(step: int, warmup_steps: int) -> float:
    """The reference's loss warm-up: the loss times (step + 1) / warmup_steps, then 1 (0: off)."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def centralize_gradients(grads: Iterable[Tensor | None]) -> None:
    """Gradient centralisation (Yong et al., ECCV 2020), as the CCL reference applies it to both
    networks: each weight gradient (dim > 1) loses its mean over all but the output unit."""
    with torch.no_grad():
        for g in grads:
            if g is not None and g.dim() > 1:
                g -= g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
