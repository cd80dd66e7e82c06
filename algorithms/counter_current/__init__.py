"""Counter-Current Learning: a forward network and a feedback network that teach each other.

Kao & Hariharan, *Counter-Current Learning: A Biologically Plausible Dual Network Approach for Deep
Learning*, NeurIPS 2024, arXiv 2409.19841 (code: IandRover/CCL-NeurIPS24, MIT). docs/learners/counter_current.md.

The forward network maps ``x`` to class scores ``o``; the feedback network maps the C class one-hots ``b_L =
I_C`` (never the batch labels) down to the input width. Every map detaches its input. Pair ``(a_l, b_l)``
trains ``f_l`` and ``g_{l+1}``, pair ``(x, b_0)`` trains ``g_1`` and CE on ``o`` trains ``f_L``; each pair is
one :class:`~.pairs.CounterCurrentPair` (a LocalLayer), so the backward of each pair runs and is freed on its
own (pair-wise backward, docs/learners/counter_current.md#pitfall-pairwise-backward).

Architectures: ``mlp:784-5x256`` (default) gives bias-free Linear pairs with ELU on both sides plus the output
map to C that this learner adds. ``cnn:C1-...-CK`` here means K CCL conv pairs
(docs/learners/counter_current.md#reference), *not*
localearn's usual conv/ReLU/pool/BN blocks: ``conv="stride"`` conv3×3 stride 2 (the MNIST model),
``conv="pool"`` conv3×3 stride 1 + maxpool 2 (the CIFAR model), ``conv="auto"`` picks stride for 1-channel and
pool for 3-channel input; the feedback side upsamples (nearest) then convolves. Then a bias-free Linear to C.

``mode="autoencoder"`` makes the feedback network take the target image (``b_L = x``) and the forward network
reconstruct it. With a ``cnn:`` spec it is the reference's conv autoencoder
(:func:`~.pairs.build_cnn_ae_pairs`, pair loss :func:`~.losses.map_pair_loss`). With an ``mlp:`` spec it is a
small MLP stand-in for it that keeps that model's initialisation (``init="reference"``, the default in this
mode: orthogonal weights, both decoder halves × 1e-3, the two image-emitting maps zero) and its BatchNorm (no
affine) before every hidden ELU. Its pair loss is the MSE plus ``s_ssl`` × the decorrelation of each side (the
CNN loss's anti-collapse term, in place of the conv model's per-channel centred-map MSE, which has no meaning
without channels). It is an ordinary Trainer run (``localearn train --algo ccl --task autoencoder``): the
trainer's ``autoencoder`` task scores :meth:`CounterCurrent.reconstruct` by its MSE to the input, for
validation (the stopping rule and best-state restore), the test metric and checkpoints.

Gradient clipping is the reference's by default (``clip_scope="network"``): one norm over each whole network
side, applied after pair-wise backward through parked gradients (the Trainer's update policy,
:mod:`localearn.update`, which also runs the loss warm-up and gradient centralisation), so the updates equal
the released ones exactly (tested); the shared coefficient couples the pairs, so this learner is not
block-local (``coupling``). ``clip_scope="pair"`` clips each pair alone.

Deviations from the reference, all documented in docs/learners/counter_current.md#deviations:

* The feedback chain runs once, no-grad, per batch to give each pair ``b_{l+1}``; each pair re-applies ``g_{l+1}``
  with grad (C extra rows per layer).
* ``filter_target`` costs one extra no-grad forward pass (it needs ``o`` before the pairs run).
* No cosine lr schedule (the loss warm-up is kept); SGD momentum is the option ``momentum`` (reference 0).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from localearn.errors import ConfigError
from localearn.layer import Context
from localearn.learner import LocalLearner, OptimizerFactory, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform
from localearn.update import centralize_gradients

from .build import build_pairs
from .losses import cosine_alignment_loss, dot_alignment_loss, reconstruction_pair_loss
from .pairs import ACTIVATIONS, CounterCurrentPair

MODES = ("classifier", "autoencoder")
INITS = ("auto", "reference", "torch")
CLIP_SCOPES = ("network", "pair")
CONVS = ("auto", "stride", "pool")

__all__ = ["CounterCurrent", "CounterCurrentPair", "centralize_gradients", "cosine_alignment_loss",
           "dot_alignment_loss", "reconstruction_pair_loss"]


@register_algorithm
class CounterCurrent(LocalLearner):
    """Counter-Current Learning (see the module docstring).

    Args:
        arch: ``mlp:...`` (default ``mlp:784-5x256``) or ``cnn:...`` spec.
        input_shape: one sample's shape.
        num_classes: C.
        schedule: only ``joint`` (the whole dual network is one training unit).
        mode: ``classifier`` (default) or ``autoencoder`` (``mlp:`` or ``cnn:`` spec).
        conv: CNN pair type, ``auto`` | ``stride`` | ``pool``.
        s_c: alignment scale s_C (0.5; the CIFAR CNN recipes use 1).
        s_ssl: decorrelation scale s_ssl (None: 0.5 for the CNN loss as released, 4.0 for the
            autoencoder pair loss, a localearn choice: the better of {2, 4} on MNIST validation
            MSE in the since-retired ``bench_counter_current.py --parts ae``, 2026-12-01).
        grad_clip: max gradient norm (1.0; 0 disables), per network side or per pair side.
        clip_scope: ``network`` (as released: one norm over the whole forward network and one over
            the whole feedback network; each pair's gradient is parked after its own backward
            and all pairs step together after the last one) or ``pair`` (each pair side alone).
        momentum: SGD momentum of both networks (reference 0); None keeps the trainer's.
        warmup_steps: scale the loss by (step + 1) / warmup_steps for the first steps (0: off).
        grad_centralization: subtract the per-output-unit mean from weight gradients.
        filter_target: drop samples whose true-class probability exceeds 0.9 from pair losses.
        init: ``auto`` (``reference`` in autoencoder mode, ``torch`` otherwise), ``reference``
            (the reference autoencoder's: orthogonal, decoder halves × 1e-3, image-emitting maps
            zero; see :func:`~.pairs.reference_ae_init`) or ``torch`` (PyTorch's Linear default).
        task: ``classification`` or ``autoencoder`` (the same as ``mode``; what ``--task`` sets).
        act: the nonlinearity of both networks, ``auto`` (ReLU for the conv autoencoder, as the
            released ``stl10_ccl_legacy.yaml``; ELU otherwise, as every released classifier and the
            MLP autoencoder stand-in, whose recipe was tuned with it), ``elu``, ``relu``.
    """

    name = "counter_current"
    aliases = ("ccl",)
    paper = "Kao & Hariharan, Counter-Current Learning, NeurIPS 2024, arXiv 2409.19841"
    schedules = ("joint",)
    block_local = False  # with the default clip_scope="network"; "pair" makes an instance block-local
    coupling = ("network-wide gradient clip (clip_scope='network', as released): one norm over all pairs "
                "of each network side scales every pair's update; clip_scope='pair' removes it")
    pipeline_refusal = "each forward layer learns from the feedback network, which runs from the output back"
    default_arch = "mlp:5x256"  # 784-5x256 on MNIST; no input width, so any dataset fits
    test_arch = "mlp:2x32"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "sgd", "lr": 1.0, "weight_decay": 0.0}
    recipes: ClassVar[dict[str, Recipe]] = {"images": recipe(  # the released MLP yaml (the default arch)
        "docs/learners/counter_current.md#reference (CCL MLP yaml: batch 256, SGD lr 1.0, momentum 0, wd 0, "
        "100 epochs)",
        optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, batch_size=256, epochs=100)}
    # CCL's plain SGD runs at lr 1.0 (the reference's MNIST setting): three decades up to 3.
    search: ClassVar[dict[str, Dist]] = {"lr": log_uniform(3e-3, 3.0)}

    def __init__(
        self,
        *args: Any,
        mode: str = "classifier",
        conv: str = "auto",
        s_c: float = 0.5,
        s_ssl: float | None = None,
        grad_clip: float = 1.0,
        momentum: float | None = 0.0,
        warmup_steps: int = 0,
        grad_centralization: bool = False,
        filter_target: bool = False,
        init: str = "auto",
        clip_scope: str = "network",
        act: str = "auto",
        task: str | None = None,
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
        if task is not None:  # the Trainer's task names the mode (``--task autoencoder``)
            wanted = {"classification": "classifier", "autoencoder": "autoencoder"}.get(task)
            if wanted is None:
                raise ConfigError(f"counter_current trains task classification or autoencoder, not {task!r}")
            if mode != "classifier" and mode != wanted:
                raise ConfigError(f"task={task!r} contradicts mode={mode!r}")
            mode = wanted
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if init == "reference" and mode != "autoencoder":
            raise ConfigError("init='reference' is the autoencoder's initialisation; use mode='autoencoder'")
        if clip_scope not in CLIP_SCOPES:
            raise ConfigError(f"clip_scope must be one of {', '.join(CLIP_SCOPES)}, got {clip_scope!r}")
        if conv not in CONVS:
            raise ConfigError(f"conv must be one of {', '.join(CONVS)}, got {conv!r}")
        if act not in ("auto", *ACTIVATIONS):
            raise ConfigError(f"act must be one of auto, {', '.join(ACTIVATIONS)}, got {act!r}")
        ae = mode == "autoencoder"
        if act == "auto":  # as released: ReLU in the conv AE recipe, ELU in every classifier
            act = "relu" if ae and self.arch.kind == "cnn" else "elu"
        if s_ssl is None:  # the conv AE's centred-map weight s_D is 1 as released
            s_ssl = (1.0 if self.arch.kind == "cnn" else 4.0) if ae else 0.5
        for key, value in (
            ("s_c", s_c),
            ("s_ssl", s_ssl),
            ("grad_clip", grad_clip),
            ("warmup_steps", warmup_steps),
            ("momentum", momentum or 0.0),
        ):
            if not value >= 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if s_c <= 0:
            raise ConfigError(f"s_c must be > 0, got {s_c}")
        if self.arch.kind not in ("mlp", "cnn"):
            raise ConfigError(f"counter_current takes mlp: or cnn: specs, got {self.arch}")
        if mode == "autoencoder" and filter_target:
            raise ConfigError("filter_target needs class scores; it is not valid in autoencoder mode")
        self.mode, self.grad_clip, self.momentum = mode, float(grad_clip), momentum
        self.task = "autoencoder" if ae else "classification"
        self.clip_scope = clip_scope
        # Only the network-wide clip couples pairs: each pair's update is then scaled by a norm
        # taken over every pair's gradient (see the class attribute ``coupling``).
        self.block_local = clip_scope == "pair" or self.grad_clip == 0
        self.filter_target = bool(filter_target)
        # The Trainer's update policy (localearn.update) runs the clip, the warm-up and centralisation.
        self.update_defaults = {"grad_clip": self.grad_clip, "clip_scope": "network" if clip_scope == "network"
                                else "layer", "grad_centralization": bool(grad_centralization),
                                "loss_warmup_steps": int(warmup_steps)}
        layers, self.conv = build_pairs(self.arch, self.input_shape, self.num_classes, ae, conv, s_c,
                                        s_ssl, init, act)
        for layer in layers:
            self.add_layer(layer)

    # ----------------------------------------------------------------------- optimisers
    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        """One optimizer per pair with an ``f`` and a ``g`` group (tagged ``side``)."""
        for layer in self._pairs():
            opt = factory(cast(Any, layer.param_groups()))
            if isinstance(opt, torch.optim.SGD) and self.momentum is not None:
                for group in opt.param_groups:
                    group["momentum"] = float(self.momentum)
            layer.optimizer = opt
        return self.optimizers()

    # --------------------------------------------------------------------------- training
    def _pairs(self) -> list[CounterCurrentPair]:
        return [cast(CounterCurrentPair, layer) for layer in self.layers]

    @torch.no_grad()
    def feedback_signals(self, target: Tensor) -> list[Tensor | None]:
        """``[None, b_1, ..., b_L]`` from ``b_L = target`` down the feedback network."""
        pairs = self._pairs()
        out: list[Tensor | None] = [None] * len(pairs)
        out[-1] = target
        for idx in range(len(pairs) - 2, 0, -1):
            out[idx] = pairs[idx].feedback(cast(Tensor, out[idx + 1]))
        return out

    def class_targets(self, device: torch.device) -> Tensor:
        """``I_C``: the feedback network's input in classifier mode."""
        return torch.eye(self.num_classes, device=device)

    def make_context(self, batch: Any) -> Context:
        x, y = self.split_batch(batch)
        extras: dict[str, Any] = {}
        if self.mode == "autoencoder":
            extras["target"] = x if self.arch.kind == "cnn" else x.flatten(1)
            extras["feedback"] = self.feedback_signals(extras["target"])
        else:
            extras["y_onehot"] = F.one_hot(y, self.num_classes).to(x.dtype)
            extras["feedback"] = self.feedback_signals(self.class_targets(x.device))
            if self.filter_target:
                with torch.no_grad():
                    p_true = self.predict(x).softmax(1).gather(1, y[:, None]).squeeze(1)
                extras["mask"] = (p_true <= 0.9).to(x.dtype)  # reference: |p_y − 1| < 0.1 drops
        return Context(y=y, num_classes=self.num_classes, extras=extras)

    # ---------------------------------------------------------------------------- inference
    def _forward_all(self, x: Tensor) -> list[Tensor]:
        out, h = [], x
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out

    def evaluate_batch(self, batch: Any, stage: Any = None) -> tuple[Tensor, Tensor]:
        """Autoencoder mode: the reconstruction and the input (the trainer's ``autoencoder`` task
        scores their MSE); classifier mode: class scores and labels."""
        if self.mode == "autoencoder":
            x, _ = self.split_batch(batch)
            return self.reconstruct(x), x
        return super().evaluate_batch(batch, stage)

    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """``x``; in classifier mode the class prototypes ``b_l`` that the pairs' scores align with."""
        fb = None if self.mode == "autoencoder" else self.feedback_signals(self.class_targets(x.device))
        return x, Context(None, self.num_classes, {"feedback": fb, "cosine": self.arch.kind == "cnn"})

    def reconstruct(self, x: Tensor) -> Tensor:
        """The forward network's reconstruction of ``x`` (autoencoder mode), shaped like ``x``."""
        if self.mode != "autoencoder":
            raise ConfigError("reconstruct() needs mode='autoencoder'; classifiers use predict(x)")
        return self._forward_all(x)[-1].view_as(x)

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {**super().capabilities(), "modes": list(MODES), "backward": "pair-wise"}
