"""A model's traced graph and the places where it can be cut.

Tracing is torch.fx's symbolic tracer (Reed et al., "torch.fx: Practical Program Capture and
Transformation for Deep Learning in Python", MLSys 2022), which descends into every container and
user module and stops at torch's own layers. Departures from the plain tracer, for generality:
a module without children, or whose forward reads ``self.training``, is traced as one call (its
Python control flow, such as stochastic depth's ``if self.training``, stays live instead of being
frozen at trace time); a module whose forward cannot be traced is retried as one opaque call, so
only the model's own ``forward`` has to be traceable (branches on ``self.training`` there are fixed
in the mode the model is in when cut); arguments after the input are fixed at their defaults.

A boundary after node ``i`` in execution order is a *valid* cut when exactly one tensor computed so
far is still needed later (a skip connection crossing it leaves two). Nodes that do not depend on
the input (parameters fetched by ``get_attr``, constants built from them) are not counted: every
block that uses one recomputes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from localearn.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.flop_counter import FlopCounterMode

# Layers that finish the layer before them: a cut is never placed in front of one (auto cuts only).
_FOLLOWER_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd, nn.Identity)
_FOLLOWER_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
    F.sigmoid, F.tanh, F.softplus, F.dropout, F.batch_norm, F.layer_norm, F.group_norm,
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh}
_FOLLOWER_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_MAX_OPAQUE = 64
_READS_TRAINING: dict[type[nn.Module], bool] = {}


class _Untraceable(Exception):
    def __init__(self, path: str, cause: Exception) -> None:
        super().__init__(path)
        self.path, self.cause = path, cause


class _Tracer(fx.Tracer):
    def __init__(self, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (super().is_leaf_module(m, module_qualified_name) or module_qualified_name in self.opaque
                or next(m.children(), None) is None or _reads_training(type(m)))

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except _Untraceable:
            raise
        except Exception as exc:
            raise _Untraceable(self.path_of_module(m), exc) from exc


def _reads_training(cls: type[nn.Module]) -> bool:
    """Whether ``cls.forward`` branches on ``self.training`` (tracing through it would freeze the mode,
    as in timm's BatchNormAct2d), read from its source; False when the source is unavailable."""
    if cls not in _READS_TRAINING:
        try:
            _READS_TRAINING[cls] = "self.training" in inspect.getsource(cls.forward)
        except (OSError, TypeError):
            _READS_TRAINING[cls] = False
    return _READS_TRAINING[cls]


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by torch.fx; its submodules stay the model's own objects."""
    opaque: set[str] = set()
    concrete = _defaults(model)
    for _ in range(_MAX_OPAQUE):
        tracer = _Tracer(opaque)
        try:
            graph = tracer.trace(model, concrete_args=concrete)
        except _Untraceable as exc:
            if exc.path in opaque:
                raise _cannot(model, exc.cause) from exc
            opaque.add(exc.path)
            continue
        except Exception as exc:
            raise _cannot(model, exc) from exc
        _drop_specialised(graph, model)
        return fx.GraphModule(model, graph, type(model).__name__)
    raise _cannot(model, RuntimeError(f"more than {_MAX_OPAQUE} submodules are untraceable"))


def _defaults(model: nn.Module) -> dict[str, Any]:
    """Arguments after the input, fixed at their defaults (``attn_mask=None``, ``is_causal=False``)."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    needed = [p.name for p in params if p.default is inspect.Parameter.empty and p.kind not in kinds]
    if needed:
        raise ConfigError(f"cutting needs a model whose forward takes one tensor; {type(model).__name__}.forward "
                          f"also needs {', '.join(needed)}")
    return {p.name: p.default for p in params if p.kind not in kinds}


def _drop_specialised(graph: fx.Graph, model: nn.Module) -> None:
    """Remove the placeholders of defaulted arguments and the checks fx adds for them."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for p in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        doomed, stack = {p}, list(p.users)
        while stack:
            n = stack.pop()
            if n not in doomed:
                doomed.add(n)
                stack.extend(n.users)
        if any(n.op == "output" for n in doomed):
            raise ConfigError(f"cutting needs a model whose output depends on its input alone; "
                              f"{type(model).__name__}.forward's argument {p.target!r} reaches the output")
        for n in sorted(doomed, key=order.__getitem__, reverse=True):
            graph.erase_node(n)


def _cannot(model: nn.Module, exc: Exception) -> ConfigError:
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"torch.fx cannot trace {type(model).__name__}.forward ({why}); cut it yourself and "
                       "pass the blocks as modules: <Learner>.from_modules([block1, block2, ...], ...)")


@dataclass
class Profile:
    """Per-node facts from one forward pass of a small batch, all per sample."""

    shapes: dict[fx.Node, tuple[int, ...]] = field(default_factory=dict)
    bytes: dict[fx.Node, int] = field(default_factory=dict)
    flops: dict[fx.Node, int] = field(default_factory=dict)
    params: dict[fx.Node, int] = field(default_factory=dict)


class _Profiler(fx.Interpreter):
    """ShapeProp plus costs: bytes of the new storage each node allocates (views and in-place results
    allocate none, so they count zero), FLOPs from torch's flop counter, parameters at first use."""

    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode, batch: int) -> None:
        # Keep every value alive so that a freed storage's address is never taken for a seen one.
        super().__init__(gm, garbage_collect_values=False)
        self.counter, self.batch, self.profile = counter, batch, Profile()
        self.storages: set[int] = set()
        self.seen_params: set[int] = set()

    def run_node(self, n: fx.Node) -> Any:
        before = self.counter.get_total_flops()
        out = super().run_node(n)
        p = self.profile
        p.flops[n] = (self.counter.get_total_flops() - before) // self.batch
        p.params[n] = self._new_params(n)
        if isinstance(out, torch.Tensor):
            p.shapes[n] = tuple(out.shape[1:])
            storage = out.untyped_storage()
            fresh = n.op not in ("placeholder", "get_attr") and storage.data_ptr() not in self.storages
            p.bytes[n] = storage.nbytes() // self.batch if fresh else 0
            self.storages.add(storage.data_ptr())
        return out

    def _new_params(self, n: fx.Node) -> int:
        if n.op == "call_module":
            params = list(self.module.get_submodule(str(n.target)).parameters())
        elif n.op == "get_attr":
            value = self.fetch_attr(str(n.target))
            params = [value] if isinstance(value, nn.Parameter) else []
        else:
            return 0
        new = [q for q in params if id(q) not in self.seen_params]
        self.seen_params.update(id(q) for q in new)
        return sum(q.numel() for q in new)


def profile(gm: fx.GraphModule, input_shape: tuple[int, ...], batch: int = 2) -> Profile:
    """Run ``gm`` once in eval mode on zeros of ``(batch, *input_shape)`` and record each node."""
    from torch.utils.flop_counter import FlopCounterMode  # on first use: it imports Triton

    first = next(gm.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {m: m.training for m in gm.modules()}
    gm.eval()  # BatchNorm statistics and dropout untouched by the probe
    counter = FlopCounterMode(display=False)
    prof = _Profiler(gm, counter, batch)
    try:
        with torch.no_grad(), counter:
            prof.run(torch.zeros(batch, *input_shape, device=device, dtype=dtype))
    except Exception as exc:
        raise ConfigError(f"{gm.__class__.__name__} fails on input shape {input_shape}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return prof.profile


def free_nodes(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes that do not depend on the input: each block recomputes the ones it uses."""
    free: set[fx.Node] = set()
    for n in nodes:
        if n.op == "get_attr" or (n.op.startswith("call_") and all(a in free for a in n.all_input_nodes)):
            free.add(n)
    return free


def live_after(nodes: list[fx.Node], free: set[fx.Node]) -> list[list[fx.Node]]:
    """For each position i, the non-free values computed at or before i that a later node uses."""
    index = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((index[u] for u in n.users), default=-1) for n in nodes}
    live: dict[fx.Node, None] = {}  # insertion-ordered set
    out: list[list[fx.Node]] = []
    for i, n in enumerate(nodes):
        if n not in free and last_use[n] > i:
            live[n] = None
        for dead in [v for v in live if last_use[v] <= i]:
            del live[dead]
        out.append(list(live))
    return out


def is_follower(n: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``n`` is a normalisation, activation, dropout or identity (it ends the layer before it)."""
    if n.op == "call_module":
        m = gm.get_submodule(str(n.target))
        return isinstance(m, _FOLLOWER_MODULES) or (
            type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention))
    if n.op == "call_function":
        return n.target in _FOLLOWER_FUNCTIONS
    return n.op == "call_method" and n.target in _FOLLOWER_METHODS


def module_path(n: fx.Node) -> list[str]:
    """The modules whose forward made ``n``, outermost first. The tracer's stack maps a call key to
    (name, type) in recent torch, and the name itself to the type in older releases."""
    return [str(v[0]) if isinstance(v, tuple) else str(k).split("@")[0]
            for k, v in n.meta.get("nn_module_stack", {}).items()]


def module_spans(nodes: list[fx.Node]) -> dict[str, tuple[int, int]]:
    """Each traced module's first and last node position (over all of its calls)."""
    spans: dict[str, tuple[int, int]] = {}
    for i, n in enumerate(nodes):
        for path in module_path(n):
            if path:
                spans[path] = (spans[path][0], i) if path in spans else (i, i)
    return spans


def point_name(i: int, nodes: list[fx.Node], spans: dict[str, tuple[int, int]]) -> str:
    """The outermost module that ends at node ``i``; else ``module:node`` (``layer1.0:add``), the fx
    node inside the innermost module that holds it, or the bare node name at the top level."""
    stack = [path for path in module_path(nodes[i]) if path]
    for path in stack:
        if spans[path][1] == i:
            return path
    return f"{stack[-1]}:{nodes[i].name}" if stack else nodes[i].name
