"""Cut any traceable model into K gradient-isolated blocks, as the supervised-local methods do.

DGL (Belilovsky, Eickenberg, Oyallon, "Decoupled Greedy Learning of CNNs", ICML 2020), InfoPro
(Wang et al., "Revisiting Locally Supervised Learning", ICLR 2021) and AugLocal (Ma et al., ICLR
2024) split a network into consecutive modules, each trained from its own loss, the last one with
the network's own classifier. :func:`cut_model` makes that split for any model torch.fx can trace
(see :mod:`localearn.models.points` for where it may cut): ``blocks=K`` balances K contiguous
blocks by activation memory (what bounds a local learner's peak), FLOPs or parameters with the
exact dynamic programme of :func:`localearn.distributed.split.split_layers`; ``blocks=[names]``
cuts after each named module. The blocks are ``torch.fx.GraphModule`` s over the model's own
submodules, so training them trains the model: its ``state_dict`` is the trained network.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from torch import fx, nn

from localearn.distributed.split import split_layers
from localearn.errors import ConfigError
from localearn.models.points import COSTS, Plan, analyse, describe_live, nearest


@dataclass(frozen=True)
class BlockCost:
    """One block's cost per sample: bytes of the tensors it allocates in a forward pass (views and
    in-place results count zero), FLOPs (torch.utils.flop_counter) and parameters."""

    activation_bytes: int
    flops: int
    params: int


@dataclass(frozen=True, repr=False)
class Cut:
    """A model cut into blocks; ``blocks[i]`` runs on ``blocks[i-1]``'s output (the first on the input)
    and ``blocks[-1]`` ends with the model's own head, so chained they compute the model.

    ``Learner.from_modules(cut.blocks, input_shape=cut.input_shape, num_classes=C)`` trains them.
    ``head`` is that head alone (``blocks[-1]`` is ``head`` after ``last_trunk``), for a learner
    that puts its own head on the last block's features, of shape ``head_shape``.
    """

    model: nn.Module
    input_shape: tuple[int, ...]
    blocks: tuple[fx.GraphModule, ...]
    shapes: tuple[tuple[int, ...], ...]
    names: tuple[tuple[str, ...], ...]
    points: tuple[str, ...]
    costs: tuple[BlockCost, ...]
    head: fx.GraphModule
    last_trunk: fx.GraphModule
    head_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return f"Cut({type(self.model).__name__} into {len(self)} blocks after {', '.join(self.points) or '-'})"

    def share(self, kind: str = "activations") -> tuple[float, ...]:
        """Each block's fraction of the model's total ``activations``, ``flops`` or ``params``."""
        attr = {"activations": "activation_bytes", "flops": "flops", "params": "params"}[kind]
        values = [getattr(c, attr) for c in self.costs]
        return tuple(v / max(sum(values), 1) for v in values)

    def summary(self) -> str:
        """One line per block: what it covers, its output shape and costs."""
        lines = []
        for i, (names, shape, c) in enumerate(zip(self.names, self.shapes, self.costs, strict=True)):
            lines.append(f"block {i}: {', '.join(names) or '-'} -> {shape}; {c.activation_bytes / 2**20:.2f} MiB "
                         f"activations, {c.flops / 1e6:.1f} MFLOPs, {c.params} params (per sample)")
        return "\n".join(lines)


def cut_model(model: nn.Module, blocks: int | Sequence[str], input_shape: Sequence[int],
              balance: str = "activations") -> Cut:
    """Cut ``model`` into ``blocks`` (an int K, or module names to cut after) for inputs of
    ``input_shape`` (one sample's shape, e.g. ``(3, 32, 32)``); ``balance`` is ``activations``,
    ``flops`` or ``params`` (K only)."""
    if balance not in COSTS:
        raise ConfigError(f"balance={balance!r}: expected one of {', '.join(COSTS)}")
    plan = analyse(model, tuple(int(s) for s in input_shape))
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        bounds = _balanced(plan, blocks, balance)
    elif isinstance(blocks, Sequence) and not isinstance(blocks, str) and all(isinstance(b, str) for b in blocks):
        bounds = _named(plan, list(blocks))
    else:
        raise ConfigError(f"blocks={blocks!r}: expected a block count or a list of module names to cut after")
    return _build(plan, bounds)


def _balanced(plan: Plan, k: int, balance: str) -> list[int]:
    edges = [0, *plan.units, plan.end]
    n = len(edges) - 1
    model = type(plan.model).__name__
    if k < 1:
        raise ConfigError(f"blocks={k}: need at least 1 block")
    if k > n:
        points = ", ".join(plan.valid[u] for u in plan.units) or "none"
        raise ConfigError(f"blocks={k}: {model} has only {n - 1} cut point{'s' * (n != 2)} for automatic cuts "
                          f"({points}), so at most {n} block{'s' * (n != 1)}; name cut points (blocks=[...]) to "
                          "cut elsewhere")
    sizes = [plan.cost(edges[i], edges[i + 1], balance) for i in range(n)]
    return [edges[r.stop] for r in split_layers(sizes, k)[:-1]]


def _named(plan: Plan, names: list[str]) -> list[int]:
    model = type(plan.model).__name__
    by_name = {name: b for b, name in plan.valid.items()}
    bounds: list[int] = []
    for name in names:
        b = plan.spans[name][1] if name in plan.spans else by_name.get(name)
        if b is None:
            modules = dict(plan.model.named_modules())
            what = (f"a module of {model} that its forward does not call as its own step" if name in modules
                    else f"not a module of {model}")
            allowed = [n for n, v in by_name.items() if not plan.head_start or v < plan.head_start]
            close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.5)
            hint = ", ".join(close) if close else nearest(plan, plan.end)
            raise ConfigError(f"cannot cut after {name!r}: {what}; nearest valid cut points: {hint}")
        if b not in plan.valid:
            live = plan.live[b]
            why = (f"a skip connection crosses it ({len(live)} tensors live across: {describe_live(plan, b)})"
                   if len(live) > 1 else "no single tensor leaves it")
            raise ConfigError(f"cannot cut after {name!r}: {why}; nearest valid cut points: {nearest(plan, b)}")
        if plan.head_start and b >= plan.head_start:
            head = ", ".join(plan.covered(plan.head_start, plan.end))
            raise ConfigError(f"cannot cut after {name!r}: {model}'s own head ({head}) follows "
                              f"{plan.valid[plan.head_start]!r} and stays whole in the last block with the layer "
                              f"before it; nearest valid cut points: {nearest(plan, plan.head_start)}")
        if bounds and b <= bounds[-1]:
            raise ConfigError(f"blocks={names}: cut points must be distinct and in the model's order; {name!r} "
                              f"does not come after {plan.valid[bounds[-1]]!r}")
        bounds.append(b)
    return bounds


def _build(plan: Plan, bounds: list[int]) -> Cut:
    edges = [0, *bounds, plan.end]
    spans = list(itertools.pairwise(edges))
    prefix = type(plan.model).__name__
    blocks = tuple(_subgraph(plan, lo, hi, f"{prefix}Block{i}") for i, (lo, hi) in enumerate(spans))
    costs = tuple(BlockCost(*(plan.cost(lo, hi, kind) for kind in COSTS)) for lo, hi in spans)
    head_start = max(plan.head_start, edges[-2])
    return Cut(model=plan.model, input_shape=plan.input_shape, blocks=blocks,
               shapes=tuple(plan.shape(hi) for _, hi in spans), names=tuple(plan.covered(lo, hi) for lo, hi in spans),
               points=tuple(plan.valid[b] for b in bounds), costs=costs,
               head=_subgraph(plan, head_start, plan.end, f"{prefix}Head"),
               last_trunk=_subgraph(plan, edges[-2], head_start, f"{prefix}LastTrunk"),
               head_shape=plan.shape(head_start) if head_start else plan.input_shape)


def _subgraph(plan: Plan, lo: int, hi: int, name: str) -> fx.GraphModule:
    """Nodes ``lo+1 .. hi`` as a module taking the value that leaves ``lo``; free nodes (parameters
    and what is computed from them alone) are copied into every block that uses them."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {plan.nodes[lo]: g.placeholder("x")}

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:
            if n not in plan.free:
                raise AssertionError(f"{n.name} crosses a cut point that was taken for valid")
            env[n] = g.node_copy(n, arg)
        return env[n]

    for n in plan.nodes[lo + 1:hi + 1]:
        if n.op == "output":
            g.output(fx.map_arg(n.args[0], arg))
            break
        if n not in plan.free:
            env[n] = g.node_copy(n, arg)
    else:
        g.output(env[plan.nodes[hi]])
    return fx.GraphModule(plan.gm, g, name)
