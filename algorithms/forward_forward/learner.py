"""The Forward-Forward learner and its Collaborative-FF option.

Hinton, *The Forward-Forward Algorithm: Some Preliminary Investigations*, arXiv 2212.13345, with
the recipe of loeweX/Forward-Forward (docs/learners/forward_forward.md); Collaborative FF: Lorberbom, Gat, Adi,
Schwing & Hazan, *Layer Collaboration in the Forward-Forward Algorithm*, arXiv 2305.12393
(docs/learners/forward_forward.md#collaborative-ff).
See the package docstring for the equations, options and deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from localearn.layer import Context
from localearn.learner import LocalLearner, Losses, OptimizerFactory, Stage
from localearn.recipes import Recipe, recipe
from localearn.registry import register_algorithm
from localearn.space import Dist, log_uniform

from . import ops
from .layers import FFClassifier, FFLayer
from .options import COLLAB, GOODNESS, NEGATIVES, PREDICTIONS, check_options
from .options import choice as _choice


@register_algorithm
class ForwardForward(LocalLearner):
    """Forward-Forward / Collaborative FF (see the package docstring for every option)."""

    name = "forward_forward"
    aliases = ("ff",)
    paper = "Hinton, The Forward-Forward Algorithm, arXiv 2212.13345 (+ CFF, arXiv 2305.12393)"
    schedule = "joint"
    schedules = ("joint", "greedy")
    # the FF loss selected an epoch-2 network in Beyond-BP (docs/learners/forward_forward.md#pitfall-selection)
    stop_metric = "val_acc"
    default_arch = "mlp:3x1000"
    test_arch = "mlp:2x32"
    default_optimizer: ClassVar[dict[str, Any]] = {"name": "sgd", "lr": 1e-3, "weight_decay": 3e-4}
    recipes: ClassVar[dict[str, Recipe]] = {
        "images": recipe("docs/learners/forward_forward.md#reference (loeweX: SGD m 0.9, lr 1e-3, wd 3e-4, batch 100, "
                         "100 epochs)",
                         {"patience": "docs/concepts/protocol.md#rule-1 (loeweX has no early stopping)"},
                         optimizer="sgd", momentum=0.9, lr=1e-3, weight_decay=3e-4, batch_size=100, epochs=100,
                         patience=20),
    }

    # Beyond-BP's revised FF space (docs/reference/setups.md#search-spaces): its ff_wd [1e-4, 1e-3] widened to three
    # decades around the recipe's 3e-4.
    search: ClassVar[dict[str, Dist]] = {"weight_decay": log_uniform(1e-5, 1e-2)}

    def __init__(
        self,
        *args: Any,
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
        **base: Any,
    ) -> None:
        super().__init__(*args, **base)
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
            # θ_l = D_l for sum goodness, 1 for mean goodness; an explicit threshold wins
            # (docs/learners/forward_forward.md#pitfall-threshold).
            theta = threshold if threshold is not None else (width if goodness == "sum" else 1.0)
            layer = FFLayer(in_dim, width, goodness=goodness, theta=theta,
                            straight_through=straight_through, peer_norm=peer_norm,
                            peer_momentum=peer_momentum, body=block)
            layer.collab, layer.index = self.collab, len(self.layers)
            self.add_layer(layer)
            in_dim = width
        self.depth = depth = len(self.layers)
        # Layer 1 sees the label pixels, so prediction and the classifier use layers 2..L
        # (docs/learners/forward_forward.md#pitfall-layer-one).
        self.read_layers = tuple(range(1, depth)) if depth > 1 else (0,)
        # CFF trains every layer on σ(Σ_t G_t − Σ_t θ_t), layer 1 included, so per-label
        # prediction reads the same sum (docs/learners/forward_forward.md#collaborative-ff: +4 pp at 3 epochs).
        self.vote_layers = tuple(range(depth)) if self.collab != "none" else self.read_layers
        if self.prediction == "linear":  # the last layer, its own position (not an FF layer)
            feat = sum(self.arch.widths[i] for i in self.read_layers)
            self.add_layer(FFClassifier(feat, self.num_classes)).layer_name = "classifier"
        # The Trainer's update policy runs loeweX's linear cool-down (localearn.update).
        self.update_defaults = {"lr_schedule": "cooldown"} if self.cooldown else {}
        self.pipeline_refusal = (  # what a layer would need from layers after it
            "collaborative FF trains every layer on the goodness summed over all layers" if self.collab != "none"
            else "hard negatives are chosen by every layer's goodness" if self.negatives == "hard"
            else "the linear classifier reads every layer's activity" if self.classifier is not None else "")

    @property
    def classifier(self) -> FFClassifier | None:
        """The linear readout (``prediction="linear"``), else None."""
        last = self.layers[-1]
        return last if isinstance(last, FFClassifier) else None

    @property
    def ff_layers(self) -> list[FFLayer]:
        """The FF layers (``self.layers`` without the classifier), typed (one process: a pipeline
        rank holds only its own, so the chain indexes ``self.layers`` by position instead)."""
        return [cast(FFLayer, layer) for layer in list(self.layers)[: self.depth]]

    def configure_optimizers(self, factory: OptimizerFactory) -> list[torch.optim.Optimizer]:
        for layer in self.ff_layers:
            layer.optimizer = factory(layer.parameters())
        if self.classifier is not None:  # its own SGD, the loeweX downstream settings
            self.classifier.optimizer = torch.optim.SGD(
                self.classifier.parameters(), lr=self.classifier_lr, momentum=0.9,
                weight_decay=self.classifier_wd)
        return self.optimizers()

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
        extras: dict[str, Any] = {"is_positive": is_pos, "neg_labels": neg_labels, "x": x}
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
        if self.schedule_mode == "joint":
            return [Stage("network", tuple(range(len(self.layers))))]
        return [Stage(layer.layer_name, (i,)) for i, layer in enumerate(self.local_layers)]

    def step_positions(self, h: Any, ctx: Context, stage: Stage,
                       positions: Sequence[tuple[int, ...]]) -> tuple[Any, Losses]:
        """The chain over the 2B rows (γ_l comes through the context), then the linear classifier's
        step on the detached neutral-label features where the unit trains it."""
        depth = self.depth
        chain = [pos for pos in positions if pos[0] < depth]
        losses: Losses = {}
        if set(stage.layers) & {i for pos in chain for i in pos}:
            h, losses = super().step_positions(h, ctx, stage, chain)
        ff_losses = list(losses.values())
        if self.classifier is not None and (depth,) in positions and depth in stage.layers:
            with torch.no_grad():
                feats = self._features(ctx["x"])
            _, losses["loss/classifier"] = self.classifier.train_step(feats, Context(ctx.y, self.num_classes))
        losses["loss"] = torch.stack(ff_losses).mean() if ff_losses else losses["loss/classifier"]
        return h, losses

    # ---------------------------------------------------------------------------- inference
    def eval_input(self, x: Any, stage: Stage | None = None) -> tuple[Any, Context]:
        """``x`` with what position 0 builds from it: the C label-embedded copies (per-label
        goodness), or, where the classifier votes, the neutral-label rows (its features)."""
        neutral = self.classifier is not None and self.votes(stage) == (self.depth,)
        extras: dict[str, Any] = {"rows": x.shape[0], "neutral": neutral}
        if neutral:  # the classifier's features, gathered along the chain (one process: FF-linear never pipelines)
            extras["feats"] = []
        return x, Context(None, self.num_classes, extras)

    def run_position(self, p: int, h: Any, ctx: Context, vote: bool) -> tuple[Any, Tensor | None]:
        """Layer p's per-label goodness ``(B, C)``, or the classifier's logits on the features."""
        depth, b, neutral = self.depth, ctx["rows"], ctx["neutral"]
        if p == depth:
            return h, self.classifier(torch.cat(ctx["feats"], 1)) if self.classifier is not None else None
        if p == 0:
            h = self.layers[0](self._inputs(h, None)) if neutral else self._label_rows_first(h)
        else:
            h = self.layers[p](h)
        if neutral:
            if p in self.read_layers:
                ctx["feats"].append(ops.rms_normalise(h))
            return h, None
        return h, ops.goodness(h, self.goodness_mode).view(-1, b).t() if vote else None

    def votes(self, stage: Stage | None) -> tuple[int, ...]:
        """The classifier (``linear``, outside greedy layer units); else the per-label goodness of
        layers 2..L (or all, under CFF), or in a greedy unit of the layers trained so far."""
        depth = self.depth
        if stage is not None and self.schedule_mode == "greedy" and stage.layers and stage.layers[0] < depth:
            last = max(stage.layers)
            return tuple(range(1, last + 1)) if last > 0 else (0,)
        return (depth,) if self.classifier is not None else self.vote_layers

    def _label_rows_first(self, x: Tensor) -> Tensor:
        """Layer 1's output for every (label c, row i), label-major ``(C·B, D_1)``, computing the
        image part once (:func:`ops.first_layer_per_label`) when layer 1 is a plain Linear."""
        first = cast(FFLayer, self.layers[0])
        if not isinstance(first.linear, nn.Linear):  # a user block: the direct C·B-row pass
            labels = torch.arange(self.num_classes, device=x.device).repeat_interleave(x.shape[0])
            return first(self._inputs(x.repeat(self.num_classes, *([1] * (x.dim() - 1))), labels))
        z = ops.first_layer_per_label(x, first.linear.weight, first.linear.bias, self.num_classes, self.label_value)
        return z.clamp_(min=0)  # ReLU (the straight-through variant differs only backward)

    def _per_label_goodness(self, x: Tensor, share_first: bool = True) -> list[Tensor]:
        """``G_l(x with label c)`` for every layer l: a list of (B, C), from one C·B-row pass
        (``share_first=False``: layer 1 runs on the C·B rows too, the reference computation)."""
        b, c = x.shape[0], self.num_classes
        if share_first:
            h = self._label_rows_first(x)
        else:
            labels = torch.arange(c, device=x.device).repeat_interleave(b)
            h = self.ff_layers[0](self._inputs(x.repeat(c, *([1] * (x.dim() - 1))), labels))
        out = [ops.goodness(h, self.goodness_mode).view(c, b).t()]
        for layer in self.ff_layers[1:]:
            h = layer(h)
            out.append(ops.goodness(h, self.goodness_mode).view(c, b).t())
        return out

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
