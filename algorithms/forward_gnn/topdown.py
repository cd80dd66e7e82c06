"""ForwardGNN's top-down variants: Top2Loss and Top2Input (training steps and recurrent inference).

Park et al., *Forward Learning of Graph Neural Networks*, ICLR 2024, arXiv 2403.11004
(docs/learners/forward_gnn.md#variants). These are not a chain: every layer steps (through
``LocalLayer.train_step``) on the detached previous-step states of the layers around it, which
the learner keeps between steps (``fgnn._states``). Functions of the learner ``fgnn``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from localearn.layer import Context

from .layers import sf_logits
from .variants import label_matrix


def cached_states(fgnn: Any, x: Tensor, ctx: Context) -> list[Tensor] | None:
    key = (tuple(x.shape), tuple(ctx["edge_index"].shape), x.device)
    if fgnn._states is None or key != fgnn._state_key:
        fgnn._state_key = key
        return None
    return fgnn._states


def step_top2loss(fgnn: Any, x: Tensor, ctx: Context) -> dict[str, Tensor]:
    states = cached_states(fgnn, x, ctx)
    if states is None:
        with torch.no_grad():
            states, h = [], x
            for layer in fgnn.layers:
                h = layer(h, ctx["edge_index"])
                states.append(h)
    ctx.extras["upper_states"] = {layer.layer_name: states[i + 1 :] for i, layer in enumerate(fgnn.layers)}
    losses, new = {}, []
    for i, layer in enumerate(fgnn.graph_layers()):  # every layer reads the previous step's states
        h, loss = layer.train_step(x if i == 0 else states[i - 1], ctx)
        new.append(h)
        losses[f"loss/{layer.layer_name}"] = loss
    fgnn._states = new
    return losses


def td_input(fgnn: Any, i: int, x: Tensor, states: list[Tensor], labels: Tensor) -> Tensor:
    upper = states[i + 1] if i + 1 < len(states) else labels
    return torch.cat([x if i == 0 else states[i - 1], upper], 1)


def step_top2input(fgnn: Any, batch: Any, x: Tensor, ctx: Context) -> dict[str, Tensor]:
    states = cached_states(fgnn, x, ctx)
    if states is None:
        states = [x.new_zeros(x.shape[0], w) for w in fgnn.arch.widths]
    labels = label_matrix(batch, fgnn.num_classes)
    losses = {}
    for parity in (0, 1):  # even layers, then odd ones (alternating)
        for i in range(parity, len(fgnn.layers), 2):
            layer = fgnn.graph_layers()[i]
            states[i], loss = layer.train_step(td_input(fgnn, i, x, states, labels), ctx)
            losses[f"loss/{layer.layer_name}"] = loss
    fgnn._states = states
    return losses


def recurrent_probs(fgnn: Any, batch: Any, x: Tensor, edges: Tensor) -> list[Tensor]:
    n = int(batch.num_nodes)
    states = [x.new_zeros(x.shape[0], w) for w in fgnn.arch.widths]
    labels = label_matrix(batch, fgnn.num_classes)
    acc = [x.new_zeros(n, fgnn.num_classes) for _ in fgnn.layers]
    for step in range(fgnn.test_steps):
        for parity in (0, 1):
            for i in range(parity, len(fgnn.layers), 2):
                states[i] = fgnn.layers[i](td_input(fgnn, i, x, states, labels), edges)
        if step >= 2:
            for i, h in enumerate(states):
                acc[i] += F.softmax(sf_logits(h, n, fgnn.tau), 1)
    return [a / (fgnn.test_steps - 2) for a in acc]

