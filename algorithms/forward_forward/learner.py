"""The Forward-Forward learner and its Collaborative-FF option.

Hinton, *The Forward-Forward Algorithm: Some Preliminary Investigations*, arXiv 2212.13345, with
the recipe of loeweX/Forward-Forward (ALGORITHMS.md §1); Collaborative FF: Lorberbom, Gat, Adi,
Schwing & Hazan, *Layer Collaboration in the Forward-Forward Algorithm*, arXiv 2305.12393 (§1.6).
See the package docstring for the equations, options and deviations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from localearn.arch import ArchSpec
from localearn.errors import ConfigError
from localearn.layer import Context, LocalLayer
from localearn.learner import LocalLearner, OptimizerFactory, Stage
from localearn.registry import register_algorithm
from localearn.trainer import Callback, Trainer

from . import ops

GOODNESS = ("sum", "mean")
NEGATIVES = ("random", "hard", "hybrid")
PREDICTIONS = ("per_label", "linear")
COLLAB = ("none", "all", "preceding")


def _choice(option: str, value: Any, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ConfigError(f"forward_forward option {option}={value!r} is not valid; choose one of "
                          f"{', '.join(valid)}")
    return str(value)


class FFLayer(LocalLayer):
    """``h = ReLU(W·rms(x) + b)`` trained by the FF loss on its goodness (+ peer normalisation)."""

    running_mean: Tensor

    def __init__(self, in_dim: int, out_dim: int, *, goodness: str, theta: float,
                 straight_through: bool, peer_norm: float, peer_momentum: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.linear.weight, 0.0, 1.0 / math.sqrt(out_dim))  # N(0, 1/D_out), loeweX
        nn.init.zeros_(self.linear.bias)
        self.goodness_mode, self.theta = goodness, float(theta)
        self.straight_through = straight_through
        self.peer_norm, self.peer_momentum = float(peer_norm), float(peer_momentum)
        self.register_buffer("running_mean", torch.full((out_dim,), 0.5))  # EMA init 0.5

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(self.linear(ops.rms_normalise(x)), self.straight_through)

    def logit(self, h: Tensor) -> Tensor:
        """``G − θ`` of each row (no gradient): this layer's vote in collaborative FF."""
        return (ops.goodness(h.detach(), self.goodness_mode) - self.theta).detach()

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        pos = ctx["is_positive"]
        loss = ops.ff_loss(ops.goodness(h, self.goodness_mode), pos, self.theta, ctx.get("gamma"))
        if self.peer_norm > 0:
            pn, r = ops.peer_norm_loss(h[pos], self.running_mean, self.peer_momentum)
            self.running_mean.copy_(r)
            loss = loss + self.peer_norm * pn
        return loss


class FFClassifier(LocalLayer):
    """The one-pass readout: a linear softmax classifier on detached features (zero-initialised)."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.zeros_(self.linear.weight)  # loeweX
        self.layer_name = "classifier"

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def local_loss(self, h: Tensor, ctx: Context) -> Tensor:
        assert ctx.y is not None
        return F.cross_entropy(h, ctx.y)


class LinearCooldown(Callback):
    """The reference cool-down ``lr_e = lr·2(1+E−e)/E`` for epochs e > E/2 (E = epochs cap).

    Pass it to :func:`localearn.fit` / :class:`~localearn.trainer.Trainer` (``learner.callbacks()``
    returns it when ``cooldown=True``). It tells the learner the 1-based number of the epoch about
    to start at fit start (resume included) and after every epoch; a greedy unit restarts at 1.
    """

    def _set(self, trainer: Trainer, epoch0: int) -> None:
        learner = trainer.learner
        if isinstance(learner, ForwardForward):
            learner.set_epoch(epoch0 + 1, trainer.config.epochs)

    def on_fit_start(self, trainer: Trainer) -> None:
        self._set(trainer, trainer.state.epoch_in_stage)

    def on_epoch_end(self, trainer: Trainer, stage: Stage, record: dict[str, Any]) -> None:
        st, cfg = trainer.state, trainer.config
        unit_goes_on = st.epoch_in_stage < cfg.epochs and st.bad_epochs < cfg.patience
        self._set(trainer, st.epoch_in_stage if unit_goes_on else 0)


@register_algorithm
class ForwardForward(LocalLearner):
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
        if self.arch.kind != "mlp":
            raise ConfigError(f"forward_forward needs an mlp: architecture (got {self.arch}); "
                              "its label is embedded into the flattened input")
        self.embed = self.negatives != "hybrid"  # hybrid negatives are unsupervised: no label
        if not self.embed:
            if self.prediction != "linear":
                raise ConfigError("forward_forward option negatives='hybrid' embeds no label, so "
                                  "prediction must be 'linear' (got prediction='per_label')")
            if self.schedule_mode != "joint" or len(self.input_shape) != 3:
                raise ConfigError("forward_forward option negatives='hybrid' needs image input "
                                  f"(C, H, W) and schedule 'joint' (got {self.input_shape}, "
                                  f"{self.schedule_mode!r})")
        if self.collab == "all" and self.schedule_mode == "greedy":
            raise ConfigError("forward_forward option collab='all' needs schedule 'joint' (later "
                              "layers are untrained in a greedy unit); use collab='preceding'")
        if not (0 <= peer_norm and 0 <= peer_momentum < 1 and hybrid_blur_steps >= 0):
            raise ConfigError("forward_forward needs peer_norm >= 0, 0 <= peer_momentum < 1 and "
                              "hybrid_blur_steps >= 0")
        if threshold is not None and not math.isfinite(threshold):
            raise ConfigError(f"forward_forward option threshold must be finite, got {threshold}")
        in_dim = math.prod(self.input_shape)
        if self.arch.input_dim is not None and self.arch.input_dim != in_dim:
            raise ConfigError(f"architecture {self.arch} declares input width "
                              f"{self.arch.input_dim}, but the data has {in_dim} features")
        if self.embed and in_dim < num_classes:
            raise ConfigError(f"forward_forward embeds {num_classes} label values into the input, "
                              f"but the input has only {in_dim} values")
        self.label_value = float(label_value)
        self.cooldown = bool(cooldown)
        self.classifier_lr = float(classifier_lr)
        self.classifier_wd = float(classifier_weight_decay)
        self.hybrid_blur_steps = int(hybrid_blur_steps)
        for width in self.arch.widths:
            # θ_l = D_l for sum goodness, 1 for mean goodness; an explicit threshold wins (§1.8.1).
            theta = threshold if threshold is not None else (width if goodness == "sum" else 1.0)
            self.add_layer(FFLayer(in_dim, width, goodness=goodness, theta=theta,
                                   straight_through=straight_through, peer_norm=peer_norm,
                                   peer_momentum=peer_momentum))
            in_dim = width
        depth = len(self.layers)
        # Layer 1 sees the label pixels, so prediction and the classifier use layers 2..L (§1.8.3).
        self.read_layers = tuple(range(1, depth)) if depth > 1 else (0,)
        self.classifier: FFClassifier | None = None
        if self.prediction == "linear":
            feat = sum(self.arch.widths[i] for i in self.read_layers)
            self.classifier = FFClassifier(feat, num_classes)
        self._epoch: tuple[int, int] | None = None

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

    def optimizers(self) -> list[torch.optim.Optimizer]:
        opts = super().optimizers()
        if self.classifier is not None and self.classifier.optimizer is not None:
            opts.append(self.classifier.optimizer)
        return opts

    def callbacks(self) -> list[Callback]:
        """Callbacks the trainer needs for this learner's recipe (the lr cool-down)."""
        return [LinearCooldown()] if self.cooldown else []

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
        return Context(y=y, num_classes=self.num_classes,
                       extras={"rows": rows, "is_positive": is_pos, "neg_labels": neg_labels})

    # ----------------------------------------------------------------------------- training
    def stages(self) -> list[Stage]:
        out = super().stages()
        if self.schedule_mode == "greedy" and self.classifier is not None:
            out.append(Stage("classifier", ()))
        return out

    def train_step(self, batch: Any, stage: Stage) -> dict[str, float]:
        """Every layer of ``stage`` steps on the same 2B rows; its input is the previous layer's
        detached output (joint) or the no-grad frozen prefix (greedy)."""
        if self.cooldown and self._epoch is None:
            warnings.warn("forward_forward cooldown=True, but no LinearCooldown callback drives it "
                          "(pass learner.callbacks() to fit/Trainer): the lr stays constant",
                          stacklevel=2)
            self._epoch = (0, 0)
        ctx = self.make_context(batch)
        logs: dict[str, float] = {}
        todo = set(stage.layers)
        if self.collab == "all" and todo:
            inputs, logits, h = [], [], ctx["rows"]
            with torch.no_grad():  # one extra pass: every layer's G on this input, current weights
                for layer in self.ff_layers:
                    inputs.append(h)
                    h = layer(h)
                    logits.append(layer.logit(h))
            total = torch.stack(logits).sum(0)
            for i in sorted(todo):
                ctx.extras["gamma"] = total - logits[i]
                _, loss = self.ff_layers[i].train_step(inputs[i], ctx)
                logs[f"loss/layer{i}"] = float(loss)
        elif todo:
            h, acc = ctx["rows"], None
            for i in range(max(todo) + 1):
                layer = self.ff_layers[i]
                ctx.extras["gamma"] = acc if self.collab == "preceding" else None
                if i in todo:
                    h, loss = layer.train_step(h, ctx)
                    logs[f"loss/layer{i}"] = float(loss)
                else:
                    with torch.no_grad():
                        h = layer(h)
                if self.collab == "preceding":
                    acc = layer.logit(h) if acc is None else acc + layer.logit(h)
        ff_losses = list(logs.values())
        joint = self.schedule_mode == "joint"
        if self.classifier is not None and (joint or stage.name == "classifier"):
            with torch.no_grad():
                feats = self._features(self.split_batch(batch)[0])
            cctx = Context(y=ctx.y, num_classes=self.num_classes)
            _, closs = self.classifier.train_step(feats, cctx)
            logs["loss/classifier"] = float(closs)
        logs["loss"] = sum(ff_losses) / len(ff_losses) if ff_losses else logs["loss/classifier"]
        return logs

    # ---------------------------------------------------------------------------- inference
    def _per_label_goodness(self, x: Tensor) -> list[Tensor]:
        """``G_l(x with label c)`` for every layer l: a list of (B, C), from one C·B-row pass."""
        b, c = x.shape[0], self.num_classes
        labels = torch.arange(c, device=x.device).repeat_interleave(b)
        h = self._inputs(x.repeat(c, *([1] * (x.dim() - 1))), labels)
        out = []
        for layer in self.ff_layers:
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

    def predict(self, x: Tensor) -> Tensor:
        """Σ_{l≥2} G_l per label (``per_label``) or the classifier's logits (``linear``)."""
        if self.classifier is not None:
            return self.classifier(self._features(x))
        return self._per_label(x, self.read_layers)

    def unit_scores(self, x: Tensor, stage: Stage) -> Tensor:
        if self.schedule_mode == "joint" or not stage.layers:
            return self.predict(x)
        last = max(stage.layers)  # a greedy unit: the goodness of the layers trained so far
        return self._per_label(x, tuple(range(1, last + 1)) if last > 0 else (0,))

    def layer_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Each layer's own per-label goodness (empty when no label is embedded)."""
        if not self.embed:
            return {}
        g = self._per_label_goodness(x)
        return {layer.layer_name: g[i] for i, layer in enumerate(self.ff_layers)}
