"""The Trainer: one readable loop for every learner (nanoGPT style).

It owns device placement, seeding of the data order, one optimizer per layer from a factory,
the training units (``learner.stages()``), epochs, evaluation, the stopping rule, best-state
restore, resumable checkpoints and a few callbacks. Learners never loop.

The stopping rule is STUDY_PROTOCOL.md Rule 1, identical for every arm and applied per training
unit: validate every epoch on the unit's validation loss (CE of the unit's scores; mode min,
``min_delta`` 0) or, for learners that declare it, validation accuracy; stop after ``patience``
epochs without improvement or at the ``epochs`` cap per unit; restore the best state (kept in
memory) before the next unit starts. The metered ``train`` window covers optimizer steps only;
``validate``, ``checkpoint`` and ``test`` are metered apart (Rule 3).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from localearn.checkpoint import CHECKPOINT_NAME, RUN_NAME, load_checkpoint, save_checkpoint, write_json
from localearn.data.base import DataBundle
from localearn.errors import ConfigError, LocalearnError
from localearn.learner import LocalLearner, OptimizerFactory, Stage
from localearn.measure import PhaseMeter, Probe, SavedTensorMeter, device_info, peak_rss_bytes, versions
from localearn.utils import derive_seed, resolve_device, to_device

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainConfig:
    """Trainer options (learner options live with the learner).

    Attributes:
        epochs: cap per training unit (protocol default 100; 20 keeps the CLI quick).
        batch_size: training batch; evaluation uses twice it.
        optimizer, lr, weight_decay: None takes the learner's ``default_optimizer``.
        momentum: SGD momentum.
        patience: epochs without improvement before a unit stops (protocol: 20).
        min_delta: improvement needed to reset patience (protocol: 0).
        stop_metric: ``val_loss`` | ``val_acc``; None takes the learner's declaration.
        restore_best: restore every unit's best state (all or none, Rule 2).
        seed: seeds the data order and every per-epoch random draw.
        device: ``auto`` | ``cpu`` | ``cuda``.
        warmup_steps: first steps metered in their own ``warmup`` window (counted in training).
        progress: show progress bars and per-epoch lines.
        measure_memory: track bytes saved for backward (saved-tensor hooks).
        evaluate_test: evaluate the test split at the end; tuning trials set False (Rule 4).
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    patience: int = 20
    min_delta: float = 0.0
    stop_metric: str | None = None
    restore_best: bool = True
    seed: int = 0
    device: str = "auto"
    warmup_steps: int = 10
    progress: bool = True
    measure_memory: bool = True
    evaluate_test: bool = True

    def validate(self) -> None:
        """Reject nonsense with one clear message."""
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.stop_metric not in (None, "val_loss", "val_acc"):
            raise ConfigError(f"stop_metric must be val_loss or val_acc, got {self.stop_metric!r}")


def make_optimizer_factory(name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> OptimizerFactory:
    """A factory that gives each layer its own optimizer of one kind and setting."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")

    def factory(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, weight_decay=weight_decay)

    return factory


@torch.no_grad()
def evaluate(
    learner: LocalLearner, data: DataBundle, split: str, batch_size: int, device: torch.device,
    stage: Stage | None = None,
) -> dict[str, float]:
    """Loss, accuracy and sample count on ``split`` (shared by the trainer and ``localearn eval``)."""
    learner.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for batch in data.eval_batches(split, batch_size):
        scores, y = learner.evaluate_batch(to_device(batch, device), stage)
        loss_sum += float(learner.scores_to_loss(scores, y)) * len(y)
        correct += int((scores.argmax(1) == y).sum())
        total += len(y)
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1), "samples": total}


class Callback:
    """Hooks into the loop; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer, stage: Stage, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, stage: Stage, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None: ...


@dataclass
class _State:
    """Everything needed to resume exactly where the last completed epoch left off."""

    stage_index: int = 0
    epoch_in_stage: int = 0
    global_epoch: int = 0
    steps: int = 0
    samples: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Drives a :class:`LocalLearner` on a :class:`DataBundle` (see the module docstring).

    Args:
        learner: the learner to train.
        data: the dataset.
        config: trainer options.
        out_dir: where ``checkpoint.pt`` (every epoch, atomically) and ``run.json`` go.
        callbacks: :class:`Callback` objects.
        probes: extra meters over the phase windows (energy).
        run_info: extra fields for ``run.json`` (algorithm name, learner and dataset options).
    """

    def __init__(
        self,
        learner: LocalLearner,
        data: DataBundle,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        callbacks: Iterable[Callback] = (),
        probes: Iterable[Probe] = (),
        run_info: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.config.validate()
        if learner.supports_graphs != (data.kind == "graph"):
            raise ConfigError(
                f"{learner.name} takes {'graph' if learner.supports_graphs else 'image'} data, "
                f"but dataset {data.name!r} is {data.kind} data"
            )
        blocker = learner.trainer_blocker()
        if blocker is not None:
            raise ConfigError(blocker)
        self.device = resolve_device(self.config.device)
        self.learner = learner.to(self.device)
        self.data = data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = [*learner.callbacks(), *callbacks]  # the recipe's own first
        self.meter = PhaseMeter(self.device, list(probes))
        self.run_info = dict(run_info or {})
        self.stop_metric = self.config.stop_metric or learner.stop_metric
        opt = dict(learner.default_optimizer)
        self.optim_settings = {
            "name": self.config.optimizer or opt["name"],
            "lr": self.config.lr if self.config.lr is not None else opt["lr"],
            "weight_decay": self.config.weight_decay if self.config.weight_decay is not None
            else opt.get("weight_decay", 0.0),
        }
        factory = make_optimizer_factory(
            str(self.optim_settings["name"]), float(self.optim_settings["lr"]),
            float(self.optim_settings["weight_decay"]), self.config.momentum,
        )
        self.optimizers = learner.configure_optimizers(factory)
        self.stages = learner.stages()
        self.state = _State()
        self.saved = SavedTensorMeter(list(learner.parameters()))
        self._best_state: dict[str, torch.Tensor] | None = None
        self._cuda_peaks: dict[str, int] = {}

    # ------------------------------------------------------------------------------ metrics
    def evaluate(self, split: str, stage: Stage | None = None) -> dict[str, float]:
        """Loss and accuracy on ``split`` of the whole model (``stage=None``) or of a unit."""
        return evaluate(self.learner, self.data, split, 2 * self.config.batch_size, self.device, stage)

    @torch.no_grad()
    def evaluate_layers(self, split: str) -> dict[str, float]:
        """Each layer's own accuracy, for learners that expose per-layer scores."""
        self.learner.eval()
        correct: dict[str, int] = {}
        total = 0
        for batch in self.data.eval_batches(split, 2 * self.config.batch_size):
            x, y = self.learner.split_batch(to_device(batch, self.device))
            per_layer = self.learner.layer_scores(x)
            if not per_layer:
                return {}
            for name, scores in per_layer.items():
                if scores.shape[0] != y.shape[0]:  # graph learners score every node
                    break
                correct[name] = correct.get(name, 0) + int((scores.argmax(1) == y).sum())
            total += len(y)
        return {name: c / max(total, 1) for name, c in correct.items()}

    # ----------------------------------------------------------------------------- training
    def _improved(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None:
            return True
        if self.stop_metric == "val_acc":
            return value > best + self.config.min_delta
        return value < best - self.config.min_delta

    def _train_epoch(self, stage: Stage, bar: Any) -> float:
        """One pass of the unit over the training set; returns the mean training loss."""
        cfg, st = self.config, self.state
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", st.global_epoch))
        torch.manual_seed(derive_seed(cfg.seed, "draws", st.global_epoch))  # negatives, noise
        batches = iter(self.data.train_batches(cfg.batch_size, gen))
        losses: list[float] = []
        while True:
            warm = st.steps < cfg.warmup_steps
            window = "warmup" if warm else "train"
            with self.meter.phase(window), self.saved:
                for batch in batches:
                    logs = self.learner.train_step(to_device(batch, self.device), stage)
                    st.steps += 1
                    st.samples += _batch_size(batch)
                    losses.append(logs["loss"])
                    bar.update(1)
                    for cb in self.callbacks:
                        cb.on_batch_end(self, stage, logs)
                    if warm and st.steps >= cfg.warmup_steps:
                        break
                else:
                    break
            if warm and st.steps >= cfg.warmup_steps:
                self._reset_cuda_peak()  # the peak is taken after warm-up (Rule 3)
        return sum(losses) / max(len(losses), 1)

    def _reset_cuda_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def _run_stage(self, stage: Stage) -> None:
        cfg, st = self.config, self.state
        self.meter.unit = stage.name  # probes (energy) attribute windows to the unit
        self.learner.set_train_mode(stage)
        if self.device.type == "cuda" and st.steps >= cfg.warmup_steps:
            torch.cuda.reset_peak_memory_stats(self.device)
        stopped_early = False
        cap = cfg.epochs if stage.max_epochs is None else min(cfg.epochs, stage.max_epochs)
        while st.epoch_in_stage < cap:
            self.learner.set_train_mode(stage)
            desc = f"{stage.name} {st.epoch_in_stage + 1}/{cap}"
            with tqdm(total=self.data.num_batches(cfg.batch_size), desc=desc, leave=False,
                      disable=not cfg.progress or None, unit="batch") as bar:
                train_loss = self._train_epoch(stage, bar)
            with self.meter.phase("validate"):
                val = self.evaluate("val", stage)
            value = val["accuracy"] if self.stop_metric == "val_acc" else val["loss"]
            improved = self._improved(value)
            if improved:
                st.best_metric, st.best_epoch, st.bad_epochs = value, st.epoch_in_stage, 0
                if cfg.restore_best:
                    self._best_state = {k: v.detach().clone() for k, v in self.learner.state_dict().items()}
            else:
                st.bad_epochs += 1
            record = {
                "unit": stage.name, "epoch": st.epoch_in_stage + 1, "global_epoch": st.global_epoch + 1,
                "train_loss": train_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                "best": improved,
            }
            st.history.append(record)
            st.epoch_in_stage += 1
            st.global_epoch += 1
            if cfg.progress:
                tqdm.write(
                    f"{stage.name:>10} epoch {record['epoch']:>3}  loss {train_loss:.4f}  "
                    f"val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.4f}" + ("  *" if improved else "")
                )
            for cb in self.callbacks:
                cb.on_epoch_end(self, stage, record)
            stopped_early = st.bad_epochs >= cfg.patience
            if stopped_early:
                break
            self._checkpoint()
        self._finish_stage(stage, stopped_early)

    def _finish_stage(self, stage: Stage, stopped_early: bool) -> None:
        st = self.state
        if self.config.restore_best and self._best_state is not None:
            self.learner.load_state_dict(self._best_state)  # before the stage is frozen (Rule 2)
        if self.device.type == "cuda":
            self._cuda_peaks[stage.name] = int(torch.cuda.max_memory_allocated(self.device))
        st.units.append({
            "unit": stage.name, "layers": list(stage.layers), "epochs": st.epoch_in_stage,
            "data_passes": st.epoch_in_stage, "best_epoch": st.best_epoch + 1,
            "best_" + self.stop_metric: st.best_metric, "stopped_early": stopped_early,
        })
        st.stage_index += 1
        st.epoch_in_stage, st.best_metric, st.best_epoch, st.bad_epochs = 0, None, -1, 0
        self._best_state = None
        self._checkpoint()

    # --------------------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> None:
        if self.out_dir is None:
            return
        with self.meter.phase("checkpoint"):
            save_checkpoint(
                {
                    "run": self.run_info,
                    "config": asdict(self.config),
                    "model": self.learner.state_dict(),
                    "optimizers": [opt.state_dict() for opt in self.optimizers],
                    "best_state": self._best_state,
                    "trainer": asdict(self.state),
                    "meters": {"phases": self.meter.state(), "saved": self.saved.state(),
                               "peak_rss_bytes": peak_rss_bytes(), "cuda_peaks": self._cuda_peaks},
                    "complete": self.state.stage_index >= len(self.stages),
                },
                self.out_dir / CHECKPOINT_NAME,
            )

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by this trainer and continue from its last epoch."""
        ckpt = load_checkpoint(path, map_location=self.device)
        try:
            self.learner.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise LocalearnError(f"checkpoint {path} does not fit this learner: {exc}") from exc
        for opt, state in zip(self.optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(state)
        self._best_state = ckpt.get("best_state")
        self.state = _State(**ckpt["trainer"])
        self.meter.load_state(ckpt["meters"]["phases"])
        self.saved.load_state(ckpt["meters"]["saved"])
        self._resumed_rss = int(ckpt["meters"].get("peak_rss_bytes", 0))
        self._cuda_peaks = dict(ckpt["meters"].get("cuda_peaks", {}))

    # ---------------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train every remaining unit, test once, write ``run.json``; returns the run record."""
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            while self.state.stage_index < len(self.stages):
                self._run_stage(self.stages[self.state.stage_index])
        except KeyboardInterrupt:
            self._write_run(self._result("interrupted"))
            raise
        self.meter.unit = None
        with self.meter.phase("test"):
            test = self.evaluate("test") if self.config.evaluate_test else None
            val = self.evaluate("val")
            layer_acc = self.evaluate_layers("test") if self.config.evaluate_test else None
        result = self._result("complete", test, val, layer_acc)
        self._write_run(result)
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _write_run(self, result: dict[str, Any]) -> None:
        if self.out_dir is not None:
            write_json(result, self.out_dir / RUN_NAME)

    def _result(self, status: str, test: dict[str, float] | None = None, val: dict[str, float] | None = None,
                layer_acc: dict[str, float] | None = None) -> dict[str, Any]:
        st, cfg = self.state, self.config
        train_s = self.meter.total("warmup", "train")
        per_layer: dict[str, dict[str, Any]] = {}
        for layer in self.learner.local_layers:
            entry: dict[str, Any] = {
                "parameters": sum(p.numel() for p in layer.parameters()),
                "peak_saved_activation_bytes": self.saved.per_layer.get(layer.layer_name, 0),
            }
            if layer_acc and layer.layer_name in layer_acc:
                entry["test_accuracy"] = layer_acc[layer.layer_name]
            per_layer[layer.layer_name] = entry
        cuda = self.device.type == "cuda"
        metrics = {
            "test_accuracy": test["accuracy"] if test else None,
            "test_loss": test["loss"] if test else None,
            "val_accuracy": val["accuracy"] if val else None,
            "val_loss": val["loss"] if val else None,
            "train_seconds": train_s,
            "warmup_seconds": self.meter.seconds.get("warmup", 0.0),
            "validate_seconds": self.meter.seconds.get("validate", 0.0),
            "checkpoint_seconds": self.meter.seconds.get("checkpoint", 0.0),
            "test_seconds": self.meter.seconds.get("test", 0.0),
            "samples_per_second": st.samples / train_s if train_s > 0 else None,
            "steps": st.steps,
            "data_passes": sum(u["data_passes"] for u in st.units) + st.epoch_in_stage,
            "epochs": st.global_epoch,
            "peak_saved_activation_bytes": self.saved.peak_bytes,
            "peak_rss_bytes": max(peak_rss_bytes(), getattr(self, "_resumed_rss", 0)),
            # Training peak: the highest unit peak (the live counter was reset at each unit start
            # and now also holds the test pass); the live counter only before any unit finished.
            "cuda_peak_allocated_bytes": (max(self._cuda_peaks.values()) if self._cuda_peaks
                                          else int(torch.cuda.max_memory_allocated(self.device))) if cuda else None,
            "cuda_peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)) if cuda else None,
            "cuda_peak_allocated_per_unit": self._cuda_peaks if cuda else None,
            "per_layer": per_layer,
            "energy": {"method": "not_measured",
                       "reason": "not requested (localearn train --energy, or probes=[EnergyProbe()])"},
        }
        for probe in self.meter.probes:
            metrics.update(probe.report())
        return {
            "status": status,
            **self.run_info,
            "arch": str(self.learner.arch),
            "schedule": self.learner.schedule_mode,
            "seed": cfg.seed,
            "config": {**asdict(cfg), "optimizer_resolved": self.optim_settings,
                       "stop_metric_resolved": self.stop_metric},
            "stop_rule": {"metric": self.stop_metric, "patience": cfg.patience, "min_delta": cfg.min_delta,
                          "cap_epochs_per_unit": cfg.epochs, "restore_best": cfg.restore_best},
            "versions": versions(),
            "device": device_info(self.device),
            "data": self.data.info,
            "units": st.units,
            "history": st.history,
            "phases_seconds": dict(self.meter.seconds),
            "metrics": metrics,
            "methods": {
                "train_seconds": "time.perf_counter over the warmup+train windows, device-synchronised edges",
                "peak_saved_activation_bytes": "autograd saved_tensors_hooks, live bytes, parameters excluded",
                "peak_rss_bytes": "getrusage ru_maxrss (process lifetime, includes data loading)",
                "cuda_peak_allocated_bytes": "torch.cuda.max_memory_allocated after warm-up reset, max over units",
                "cuda_peak_reserved_bytes": "torch.cuda.max_memory_reserved since the last unit start (includes test)",
                "data_passes": "training-set passes summed over training units",
            },
        }


def _batch_size(batch: Any) -> int:
    if isinstance(batch, (tuple, list)) and hasattr(batch[-1], "shape"):
        return int(batch[-1].shape[0])
    return int(getattr(batch, "num_nodes", 1))
