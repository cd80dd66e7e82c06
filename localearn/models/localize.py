"""``localize``: a learner that trains your model block by block (issue #19, "bring a model").

Supervised local learning cuts a network into consecutive modules trained from their own losses
(DGL, Belilovsky et al., ICML 2020; InfoPro, Wang et al., ICLR 2021; AugLocal, Ma et al., ICLR
2024). :func:`localize` does it for any model torch.fx can trace: a model object or a source name
(``torchvision:resnet18``), cut into ``blocks`` (:func:`~localearn.models.cut.cut_model`), under any
learner that takes a model (``takes_models``: ``dgl``, ``infopro``, ``auglocal``, ``mono_forward``,
``cafo``, and ``backprop``, which trains the unmodified model end to end). The learner it returns is
an ordinary learner: the Trainer trains it, ``--parallel pipeline`` places its blocks on ranks, and
a source name is recorded in its ``arch`` (a ``model:`` spec, :mod:`localearn.models.spec`), so
``localearn.fit``, studies and ``localearn eval`` rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from localearn.errors import ConfigError
from localearn.models.sources import probe
from localearn.models.spec import is_model_arch, model_arch, object_spec, parse_model_spec

if TYPE_CHECKING:
    from localearn.learner import LocalLearner


def model_learners() -> list[str]:
    """The registered learners that train over a model's blocks."""
    from localearn.registry import get_algorithm, list_algorithms

    return [n for n in list_algorithms() if getattr(get_algorithm(n), "takes_models", False)]


def check_takes_model(algo: str) -> None:
    """Refuse, naming the learners that can, a learner that does not train over a model's blocks."""
    from localearn.registry import get_algorithm

    cls = get_algorithm(algo)
    if not getattr(cls, "takes_models", False):
        raise ConfigError(f"{cls.name} builds its own layers and does not train over a model's blocks; "
                          f"learners that do: {', '.join(model_learners())}")


def model_setting(arch: str | None, model: Any, blocks: Any = None, balance: str | None = None,
                  options: Mapping[str, Any] | None = None) -> str | None:
    """The ``arch`` of a run given ``--model``/``model=`` and its cut settings (None: no model)."""
    if model is None:
        if blocks is not None or balance is not None or options:
            raise ConfigError("blocks, balance and model options describe a model: give it with --model SOURCE "
                              "(model= in Python)")
        return arch
    if arch is not None:
        raise ConfigError(f"give either an architecture (--arch {arch}) or a model (--model), not both")
    if isinstance(model, nn.Module):
        raise ConfigError("fit rebuilds its model from a name: pass a source such as torchvision:resnet18; for a "
                          "model object use localearn.localize(model, ...) with a Trainer")
    if not isinstance(model, str):
        raise ConfigError(f"model must be a source name such as torchvision:resnet18, got {type(model).__name__}")
    return model_arch(model, blocks, balance, options)


def arm_arch(algo: str, arm: Mapping[str, Any]) -> str | None:
    """A study arm's ``arch``: its own, or its ``model``/``blocks``/``balance``/``model_options`` as a
    ``model:`` spec, for a learner that takes a model."""
    options = arm.get("model_options")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"model_options must be a table, got {options!r}")
    arch = model_setting(arm.get("arch"), arm.get("model"), arm.get("blocks"), arm.get("balance"), options)
    if is_model_arch(arch):
        check_takes_model(algo)
    return arch


def _num_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    out = probe(model, input_shape, type(model).__name__)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{type(model).__name__} returns {got} for 2 inputs; localize needs class scores (2, C)")
    return int(out.shape[1])


def localize(model: nn.Module | str, algo: str = "dgl", *, input_shape: Sequence[int],
             blocks: int | str | Sequence[str] | None = None, num_classes: int | None = None,
             balance: str | None = None, model_options: Mapping[str, Any] | None = None,
             **options: Any) -> LocalLearner:
    """``algo`` over ``model`` cut into ``blocks``; returns the learner (see the module docstring).

    Args:
        model: a model object (its own parameters are trained), or a source name
            (``torchvision:NAME``, ``timm:NAME``, ``package.module:factory``) built with random weights.
        algo: a learner that takes a model (default ``dgl``).
        input_shape: one sample's shape, e.g. ``(3, 32, 32)``.
        blocks: a block count (default 4) or module names to cut after.
        num_classes: C; for a model object, read from its output when None.
        balance: ``activations`` (default), ``flops`` or ``params`` (a block count only).
        model_options: a source's constructor options (``{"stem": "imagenet"}``).
        options: the learner's options (``head="conv"``, ``schedule="greedy"``, ``aug_depth=3``).
    """
    from localearn.registry import canonical_name, get_algorithm
    from localearn.run import check_options

    name = canonical_name(algo)
    check_takes_model(name)
    if "arch" in options:
        raise ConfigError("localize takes a model instead of an arch spec; drop arch=")
    check_options(name, options)
    shape = tuple(int(s) for s in input_shape)
    if isinstance(model, nn.Module):
        if model_options:
            raise ConfigError("model_options configure a model built from a source name; this model is built")
        spec = object_spec(model, blocks, balance)
        classes = _num_classes(model, shape) if num_classes is None else num_classes
    elif isinstance(model, str):
        if num_classes is None:
            raise ConfigError(f"localize({model!r}) builds the model: give num_classes")
        spec, classes = parse_model_spec(model_arch(model, blocks, balance, model_options)), num_classes
    else:
        raise ConfigError(f"localize takes a torch.nn.Module or a source name, not {type(model).__name__}")
    return get_algorithm(name)(arch=spec, input_shape=shape, num_classes=classes, **options)


__all__ = ["arm_arch", "check_takes_model", "localize", "model_learners", "model_setting"]
