"""Where a traced model may be cut for supervised local learning (consecutive modules with their own
losses: DGL, Belilovsky et al., ICML 2020; InfoPro, Wang et al., ICLR 2021), and which cut points an
automatic split chooses from. Rules, all read off the traced graph (:mod:`localearn.models.graph`):

- *valid* cut: exactly one tensor live across the boundary, right after the node that makes it,
  with work left after it. A named cut may use any valid one.
- *units* for an automatic split (``blocks=K``): a valid cut is skipped when its tensor's only user
  is a normalisation, activation, dropout or identity (a block ends after its nonlinearity, not
  between a conv and its BatchNorm), or when it falls inside a module's own code rather than at
  the end of a module (a pre-norm transformer layer's residual stream between attention and MLP
  is valid, ``encoder_layer_1:add_3``, but only named cuts use it); a parameter-free piece (a lone
  pooling or reshape) joins the piece before it (the first one joins the next), since a block
  without parameters cannot learn.
- the model's *own head* stays whole inside the last block, as in DGL and InfoPro (their last
  module trains the network's classifier). It starts where the tensor's rank last drops (flatten,
  class-token select, ...) provided parameters come before that point (otherwise, as in an MLP that
  flattens first, it is the last piece with parameters), and takes in the parameter-free pieces
  before it (ResNet's global pool). ResNet: avgpool, flatten, fc; ViT: class token, heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from localearn.errors import ConfigError
from localearn.models import graph

COSTS = ("activations", "flops", "params")


@dataclass
class Plan:
    """A traced model with its valid cut points, its own head and its units (node positions: a
    boundary ``b`` sits after ``nodes[b]``; position 0 is the input)."""

    model: nn.Module
    input_shape: tuple[int, ...]
    gm: fx.GraphModule
    nodes: list[fx.Node]
    profile: graph.Profile
    free: set[fx.Node]
    live: list[list[fx.Node]]
    spans: dict[str, tuple[int, int]]
    valid: dict[int, str]
    head_start: int
    units: list[int]

    @property
    def end(self) -> int:
        return len(self.nodes) - 1

    def cost(self, lo: int, hi: int, kind: str) -> int:
        """The cost of nodes ``lo+1 .. hi`` (per sample): activation bytes, FLOPs or parameters."""
        table = {"activations": self.profile.bytes, "flops": self.profile.flops, "params": self.profile.params}[kind]
        return sum(table.get(n, 0) for n in self.nodes[lo + 1:hi + 1])

    def shape(self, b: int) -> tuple[int, ...]:
        """The per-sample shape of the value leaving boundary ``b`` (the output at the end)."""
        if b == self.end:
            out = self.nodes[b].args[0]
            return self.profile.shapes.get(out, ()) if isinstance(out, fx.Node) else ()
        return self.profile.shapes[self.nodes[b]]

    def covered(self, lo: int, hi: int) -> tuple[str, ...]:
        """The outermost modules whose every call lies in nodes ``lo+1 .. hi``."""
        inside = sorted((first, path) for path, (first, last) in self.spans.items() if lo < first and last <= hi)
        out: list[str] = []
        for _, path in inside:
            if not any(path.startswith(p + ".") for p in out):
                out.append(path)
        return tuple(out)


def analyse(model: nn.Module, input_shape: tuple[int, ...]) -> Plan:
    """Trace and profile ``model`` on ``input_shape`` and find its cut points, head and units."""
    gm = graph.trace(model)
    nodes = list(gm.graph.nodes)
    inputs = [n.name for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ConfigError(f"cutting needs a model whose forward takes one tensor; {type(model).__name__}.forward "
                          f"takes {len(inputs)} ({', '.join(inputs)})")
    prof = graph.profile(gm, input_shape)
    free = graph.free_nodes(nodes)
    live = graph.live_after(nodes, free)
    spans = graph.module_spans(nodes)
    calls = [i for i, n in enumerate(nodes) if n.op.startswith("call_") and n not in free]
    last_call = calls[-1] if calls else 0
    valid = {i: graph.point_name(i, nodes, spans) for i in range(1, last_call)
             if live[i] == [nodes[i]] and nodes[i] in prof.shapes}
    strong = [i for i, name in valid.items() if ":" not in name
              and not (len(nodes[i].users) == 1 and graph.is_follower(next(iter(nodes[i].users)), gm))]
    plan = Plan(model, input_shape, gm, nodes, prof, free, live, spans, valid, 0, [])
    plan.head_start = _head_start(plan, strong, len(input_shape))
    plan.units = _units(plan, [b for b in strong if b < plan.head_start])
    return plan


def _head_start(plan: Plan, strong: list[int], input_rank: int) -> int:
    edges = [0, *strong, plan.end]
    params = [plan.cost(edges[k], edges[k + 1], "params") for k in range(len(edges) - 1)]
    ranks = [input_rank, *(len(plan.shape(b)) for b in strong)]
    out = plan.nodes[-1].args[0]
    ranks.append(len(plan.shape(plan.end)) if isinstance(out, fx.Node) and out in plan.profile.shapes else 10**6)
    drops = [k for k in range(len(params)) if ranks[k + 1] < ranks[k]]
    if drops and sum(params[:drops[-1]]) > 0:
        k = drops[-1]
    else:
        with_params = [k for k, p in enumerate(params) if p > 0]
        k = with_params[-1] if with_params else 0
    while k > 0 and params[k - 1] == 0:
        k -= 1
    return edges[k]


def _units(plan: Plan, cuts: list[int]) -> list[int]:
    """Drop cuts so that every unit holds parameters: a parameter-free unit joins the one before it
    (VGG's max-pool ends its stage), the first one joins the next."""
    bounds = [0, *cuts, plan.end]
    k = 1
    while k < len(bounds) and len(bounds) > 2:
        if plan.cost(bounds[k - 1], bounds[k], "params") > 0:
            k += 1
        elif k == 1:
            del bounds[1]
        else:
            del bounds[k - 1]
    return bounds[1:-1]


def describe_live(plan: Plan, b: int) -> str:
    """The modules (or fx nodes) whose outputs are live across boundary ``b``."""
    names = []
    for n in plan.live[b]:
        stack = graph.module_path(n)
        names.append(stack[-1] if stack else n.name)
    return ", ".join(dict.fromkeys(names))


def nearest(plan: Plan, b: int) -> str:
    """The valid cut points (module ends preferred) just before and just after position ``b``."""
    named = [v for v, name in plan.valid.items() if ":" not in name and (not plan.head_start or v < plan.head_start)]
    points = named or list(plan.valid)
    near = [p for p in (max((v for v in points if v < b), default=None), min((v for v in points if v > b),
                                                                             default=None)) if p is not None]
    return ", ".join(repr(plan.valid[p]) for p in near) or "none (the model has no valid cut point)"
