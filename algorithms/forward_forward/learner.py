"""The Forward-Forward learner and its Collaborative-FF option.

Hinton, *The Forward-Forward Algorithm: Some Preliminary Investigations*, arXiv 2212.13345, with
the recipe of loeweX/Forward-Forward (ALGORITHMS.md §1); Collaborative FF: Lorberbom, Gat, Adi,
Schwing & Hazan, *Layer Collaboration in the Forward-Forward Algorithm*, arXiv 2305.12393 (§1.6).
See the package docstring for the equations, options and deviations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from localearn.arch import ArchSpec
from localearn.distributed.pipelined import Pipelined
from localearn.layer import Context
from localearn.learner import OptimizerFactory, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm

from . import ops
from .layers import FFClassifier, FFLayer
from .options import COLLAB, GOODNESS, NEGATIVES, PREDICTIONS, check_options
from .options import choice as _choice


@register_algorithm
class ForwardForward(Pipelined):
    """Forward-Forward / Collaborative FF (see the package docstring for every option)."""

    name = "forward_forward"
    aliases = ("ff",)
    paper = "Hinton, The Forward-Forward Algorithm, arXiv 2212.13345 (+ CFF, arXiv 2305.12393)"
    schedule = "joint"
    schedules = ("joint", "greedy")
    stop_metric = "val_acc"  # the FF loss selected an epoch-2 network in Beyond-BP (§1.8.7)
    default_arch = "mlp:3x1000"
    test_arch = "mlp:2x32"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "sgd", "lr": 1e-3, "weight_decay": 3e-4}
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("ALGORITHMS.md §1.4 (loeweX: SGD m 0.9, lr 1e-3, wd 3e-4, batch 100, 100 epochs)",
                         {"patience": "STUDY_PROTOCOL.md §3 Rule 1 (loeweX has no early stopping)"},
                         optimizer="sgd", momentum=0.9, lr=1e-3, weight_decay=3e-4, batch_size=100, epochs=100,
                         patience=20),
    }

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Beyond-BP's revised FF space (STUDY_PROTOCOL §7.3): ff_lr [1e-5, 1e-2]; its ff_wd
        [1e-4, 1e-3] widened to three decades around the recipe's 3e-4."""
        return {"lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
                "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)}

    def __init__(
        self,
        arch: str | ArchSpec | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        schedule: str | None = None,
        goodness: str = "sum",
        threshold: float | None = None,
        negatives: str = "random",
        prediction: str = "per_label",
        label_value: float = 3.25,
        straight_through: bool = True,
        peer_norm: float = 0.03,
        peer_momentum: float = 0.9,
        collab: str = "none",
        cooldown: bool = True,
        classifier_lr: float = 1e-2,
        classifier_weight_decay: float = 3e-3,
        hybrid_blur_steps: int = 10,
    ) -> None:
        super().__init__(arch, input_shape, num_classes, schedule)
        self.goodness_mode = _choice("goodness", goodness, GOODNESS)
        self.negatives = _choice("negatives", negatives, NEGATIVES)
        self.prediction = _choice("prediction", prediction, PREDICTIONS)
        self.collab = _choice("collab", collab, COLLAB)
        self.embed = self.negatives != "hybrid"  # hybrid negatives are unsupervised: no label
        in_dim = check_options(self, threshold, peer_norm, peer_momentum, hybrid_blur_steps)
        self.label_value = float(label_value)
        self.cooldown = bool(cooldown)
        self.classifier_lr = float(classifier_lr)
        self.classifier_wd = float(classifier_weight_decay)
        self.hybrid_blur_steps = int(hybrid_blur_steps)
        blocks = getattr(self.arch, "blocks", None) or [None] * self.arch.depth
        for width, block in zip(self.arch.widths, blocks, strict=True):
            # θ_l = D_l for sum goodness, 1 for mean goodness; an explicit threshold wins (§1.8.1).
            theta = threshold if threshold is not None else (width if goodness == "sum" else 1.0)
            layer = FFLayer(in_dim, width, goodness=goodness, theta=theta,
                            straight_through=straight_through, peer_norm=peer_norm,
                            peer_momentum=peer_momentum, body=block)
            layer.collab, layer.index = self.collab, len(self.layers)
            self.add_layer(layer)
            in_dim = width
        depth = len(self.layers)
        # Layer 1 sees the label pixels, so prediction and the classifier use layers 2..L (§1.8.3).
        self.read_layers = tuple(range(1, depth)) if depth > 1 else (0,)
        # CFF trains every layer on σ(Σ_t G_t − Σ_t θ_t), layer 1 included, so per-label
        # prediction reads the same sum (README, "Collaborative FF": +4 pp at 3 epochs).
        self.vote_layers = tuple(range(depth)) if self.collab != "none" else self.read_layers
        self.classifier: FFClassifier | None = None
        if self.prediction == "linear":
            feat = sum(self.arch.widths[i] for i in self.read_layers)
            self.classifier = FFClassifier(feat, num_classes)
        self._epoch: tuple[int, int] | None = None
        self.pipeline_refusal = (  # what a layer would need from layers after it
            "collaborative FF trains every layer on the goodness summed over all layers" if self.collab != "none"
            else "hard negatives are chosen by every layer's goodness" if self.negatives == "hard"
            else "the linear classifier reads every layer's activity" if self.classifier is not None else "")

    @property
    def ff_layers(self) -> list[FFLayer]:
        """``self.layers`` with their type (a ModuleList types its items as Module)."""
        return [cast(FFLayer, layer) for layer in self.layers]

    # ------------------------------------------------------------------ optimizers, cool-down
    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        for layer in self.ff_layers:
            layer.optimizer = factory(layer.parameters())
        if self.classifier is not None:  # its own SGD, the loeweX downstream settings
            self.classifier.optimizer = torch.optim.SGD(
                self.classifier.parameters(), lr=self.classifier_lr, momentum=0.9,
                weight_decay=self.classifier_wd)
        for opt in self.optimizers():
            for group in opt.param_groups:  # saved with the optimizer, so a resume keeps the base
                group.setdefault("initial_lr", group["lr"])
        return self.optimizers()

    def start_epoch(self, stage: Stage, epoch: int, epochs: int) -> None:
        """The Trainer's epoch-start hook drives the cool-down (a greedy unit restarts at 1)."""
        super().start_epoch(stage, epoch, epochs)
        self.set_epoch(epoch, epochs)

    def set_epoch(self, epoch: int, total: int) -> None:
        """Apply the cool-down factor for 1-based ``epoch`` of ``total`` (no-op if cooldown off)."""
        self._epoch = (epoch, total)
        if not self.cooldown:
            return
        # min(1, ·): for odd E the first cooled epoch would otherwise get (E+1)/E × lr.
        factor = min(1.0, 2.0 * (1 + total - epoch) / total) if epoch > total / 2 else 1.0
        for opt in self.optimizers():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor

    # ------------------------------------------------------------------------ data plumbing
    def _inputs(self, x: Tensor, labels: Tensor | None) -> Tensor:
        if not self.embed:
            return x.flatten(1)
        return ops.embed_labels(x, labels, self.num_classes, self.label_value)

    def make_context(self, batch: Any) -> Context:
        """2B rows (positive then negative), ``is_positive`` and the negative labels in extras."""
        x, y = self.split_batch(batch)
        neg_labels: Tensor | None = None
        if self.negatives == "hybrid":
            neg = ops.hybrid_images(x, y, self.hybrid_blur_steps).flatten(1)
        else:
            if self.negatives == "hard":
                with torch.no_grad():
                    neg_labels = ops.hardest_wrong_labels(y, self._per_label(x, self.read_layers))
            else:
                neg_labels = ops.wrong_labels(y, self.num_classes)
            neg = self._inputs(x, neg_labels)
        rows = torch.cat([self._inputs(x, y), neg])
        is_pos = torch.arange(len(rows), device=rows.device) < len(y)
        extras: dict[str, Any] = {"is_positive": is_pos, "neg_labels": neg_labels}
        if self.collab == "all":  # one extra pass: every layer's G on this input, current weights
            with torch.no_grad():
                h, logits = rows, []
                for layer in self.ff_layers:
                    h = layer(h)
                    logits.append(layer.logit(h))
            extras.update(logits=logits, total=torch.stack(logits).sum(0))
        return Context(y=y, num_classes=self.num_classes, extras=extras, inputs=rows)

    # ----------------------------------------------------------------------------- training
    def stages(self) -> list[Stage]:
        out = super().stages()
        if self.schedule_mode == "greedy" and self.classifier is not None:
            out.append(Stage("classifier", ()))
        return out

    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        """The base chain over the 2B rows (every layer of ``stage`` steps; γ_l comes through the
        context), then the linear classifier's step on the detached features where it trains."""
        if self.cooldown and self._epoch is None:
            warnings.warn("forward_forward cooldown=True, but start_epoch() was never called (the "
                          "Trainer calls it before every epoch): the lr stays constant", stacklevel=2)
            self._epoch = (0, 0)
        logs = super().train_step(batch, stage) if stage.layers else {}
        ff_losses = [v for k, v in logs.items() if k.startswith("loss/")]
        joint = self.schedule_mode == "joint"
        if self.classifier is not None and (joint or stage.name == "classifier"):
            x, y = self.split_batch(batch)
            with torch.no_grad():
                feats = self._features(x)
            _, closs = self.classifier.train_step(feats, Context(y=y, num_classes=self.num_classes))
            logs["loss/classifier"] = float(closs)
        logs["loss"] = sum(ff_losses) / len(ff_losses) if ff_losses else logs["loss/classifier"]
        return logs

    # ---------------------------------------------------------------------------- inference
    def _per_label_goodness(self, x: Tensor, share_first: bool = True) -> list[Tensor]:
        """``G_l(x with label c)`` for every layer l: a list of (B, C), from one C·B-row pass.

        ``share_first``: layer 1's image part is computed once for all C labels (see
        :meth:`_first_layer_per_label`); False runs the C·B-row input through layer 1 as well.
        """
        b, c = x.shape[0], self.num_classes
        if share_first and isinstance(self.ff_layers[0].linear, nn.Linear):  # not a user block
            h = self._first_layer_per_label(x)
        else:
            labels = torch.arange(c, device=x.device).repeat_interleave(b)
            h = self.ff_layers[0](self._inputs(x.repeat(c, *([1] * (x.dim() - 1))), labels))
        out = [ops.goodness(h, self.goodness_mode).view(c, b).t()]
        for layer in self.ff_layers[1:]:
            h = layer(h)
            out.append(ops.goodness(h, self.goodness_mode).view(c, b).t())
        return out

    def _first_layer_per_label(self, x: Tensor) -> Tensor:
        """Layer 1's output for every (label c, row i), label-major ``(C·B, D_1)``, computing the
        image part once (:func:`ops.first_layer_per_label`)."""
        linear = cast(nn.Linear, self.ff_layers[0].linear)
        z = ops.first_layer_per_label(x, linear.weight, linear.bias, self.num_classes,
                                      self.label_value)
        return z.clamp_(min=0)  # ReLU (the straight-through variant differs only backward)

    def _per_label(self, x: Tensor, layers: Sequence[int]) -> Tensor:
        g = self._per_label_goodness(x)
        return torch.stack([g[i] for i in layers]).sum(0)

    def _features(self, x: Tensor) -> Tensor:
        """Normalised activities of layers 2..L on the neutral-label input (classifier input)."""
        h, feats = self._inputs(x, None), []
        for i, layer in enumerate(self.ff_layers):
            h = layer(h)
            if i in self.read_layers:
                feats.append(ops.rms_normalise(h))
        return torch.cat(feats, dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """Σ_{l≥2} G_l per label (``per_label``) or the classifier's logits (``linear``)."""
        if self.classifier is not None:
            return self.classifier(self._features(x))
        return self._per_label(x, self.vote_layers)

    def unit_scores(self, x: Tensor, stage: Stage) -> Tensor:
        if self.schedule_mode == "joint" or not stage.layers:
            return self.predict(x)
        last = max(stage.layers)  # a greedy unit: the goodness of the layers trained so far
        return self._per_label(x, tuple(range(1, last + 1)) if last > 0 else (0,))

    # --------------------------------------------------------- pipeline (localearn.distributed)
    def pipeline_eval_input(self, batch: Any) -> tuple[Tensor, Context]:
        """The C·B label-embedded rows (label-major) that per-label scoring runs through the net."""
        x, y = self.split_batch(batch)
        labels = torch.arange(self.num_classes, device=x.device).repeat_interleave(x.shape[0])
        h = self._inputs(x.repeat(self.num_classes, *([1] * (x.dim() - 1))), labels)
        return h, Context(y=y, num_classes=self.num_classes)

    def pipeline_score(self, p: int, h: Tensor, ctx: Context, stage: Stage | None) -> Tensor:
        """Layer p's goodness per (row, label), ``(B, C)``."""
        assert ctx.y is not None
        return ops.goodness(h, self.goodness_mode).view(-1, int(ctx.y.shape[0])).t()

    def pipeline_votes(self, stage: Stage | None) -> tuple[int, ...]:
        """The layers whose goodness sums to the scores of ``stage`` (as :meth:`unit_scores`)."""
        if stage is None or self.schedule_mode == "joint" or not stage.layers:
            return self.vote_layers
        last = max(stage.layers)
        return tuple(range(1, last + 1)) if last > 0 else (0,)

    def layer_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Each layer's own per-label goodness (empty when no label is embedded)."""
        if not self.embed:
            return {}
        g = self._per_label_goodness(x)
        return {layer.layer_name: g[i] for i, layer in enumerate(self.ff_layers)}
