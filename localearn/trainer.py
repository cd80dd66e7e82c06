"""The Trainer: one readable loop for every learner (nanoGPT style).

It owns device placement, seeding of the data order, one optimizer per layer from a factory,
the training units (``learner.stages()``), epochs, evaluation on the learner's task, the
stopping rule, best-state restore, resumable checkpoints, the run's outcome and a few callbacks.
Learners never loop.

The stopping rule is docs/concepts/protocol.md#rule-1, identical for every arm and applied per training
unit: validate every epoch on the unit's validation loss (mode min, ``min_delta`` 0) or, for
learners that declare it, the task's metric (accuracy, ROC-AUC, MSE); stop after ``patience``
epochs without improvement or at the epoch cap of the unit; restore the best state (kept in
memory) before the next unit starts. A non-finite loss or parameter stops the run as
``diverged`` (:mod:`localearn.outcome`). The metered ``train`` window covers optimizer steps
only (:mod:`localearn.windows`); ``validate``, ``checkpoint`` and ``test`` are metered apart
(Rule 3). ``run.json`` is assembled by :mod:`localearn.record`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from localearn import outcome, snapshot
from localearn.callbacks import Callback
from localearn.checkpoint import RUN_NAME, write_json
from localearn.config import OPTIMIZERS, TrainConfig, make_optimizer_factory, resolve_optimizer
from localearn.data.adapters import as_bundle
from localearn.data.base import DataBundle, place_data
from localearn.distributed import make_parallel
from localearn.errors import ConfigError
from localearn.feature_cache import FeatureCache
from localearn.kernels import configure_layers, cuda_graphs_setting
from localearn.layer import LocalLayer
from localearn.learner import LocalLearner, Stage
from localearn.losslog import LossLog
from localearn.measure import PhaseMeter, Probe, SavedTensorMeter
from localearn.record import run_record
from localearn.snapshot import TrainState
from localearn.tasks import evaluate, get_task, layer_accuracies
from localearn.utils import derive_seed, resolve_device, to_device
from localearn.windows import metered_steps

__all__ = ["OPTIMIZERS", "Callback", "TrainConfig", "Trainer", "evaluate", "make_optimizer_factory"]


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

    def __init__(self, learner: LocalLearner, data: DataBundle, config: TrainConfig | None = None,
                 out_dir: str | Path | None = None, callbacks: Iterable[Callback] = (), probes: Iterable[Probe] = (),
                 run_info: dict[str, Any] | None = None) -> None:
        data = as_bundle(data)  # DataLoaders or a PyG graph beside the bundled datasets
        self.config = config or TrainConfig()
        self.config.validate()
        if learner.supports_graphs != (data.kind == "graph"):
            raise ConfigError(f"{learner.name} takes {'graph' if learner.supports_graphs else 'image'} data, "
                              f"but dataset {data.name!r} is {data.kind} data")
        self.task = get_task(learner.task)
        refusal = learner.precision_refusal.get(self.config.precision)
        if refusal:
            raise ConfigError(f"{learner.name} cannot train at precision {self.config.precision}: {refusal}")
        # One process, or this rank of a torchrun job (localearn.distributed: pipeline or DDP).
        self.par, self.device = make_parallel(self.config, resolve_device(self.config.device))
        self.config.progress = self.config.progress and self.par.is_main
        self.learner = learner.to(self.device)
        self.data = place_data(data, self.device, self.config.data_on_device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        self.meter = PhaseMeter(self.device, list(probes))
        self.run_info = dict(run_info or {})
        self.stop_metric = self.config.stop_metric or learner.stop_metric
        self.optim_settings, factory = resolve_optimizer(self.config, learner.default_optimizer)
        self.optimizers = learner.configure_optimizers(factory)
        # The update policy (precision, clipping, warm-ups, schedules) is the Trainer's: every layer steps under it.
        self.policy = self.config.policy(learner.update_defaults).attach(learner)
        self.cuda_graphs = cuda_graphs_setting(learner, self.config.cuda_graphs, self.device)
        configure_layers(self.learner, self.config.kernels, self.config.compile, self.cuda_graphs)
        self.stages = learner.stages()
        self.par.setup(self)  # a pipeline rank drops other ranks' layers; DDP hooks gradients
        if self.config.prefix_cache_gb > 0:
            learner.prefix_cache = FeatureCache(int(self.config.prefix_cache_gb * 2**30))
        self.state = TrainState()
        self.saved = SavedTensorMeter(list(learner.parameters()))
        self._best_state: dict[str, torch.Tensor] | None = None
        self.cuda_peaks: dict[str, int] = {}
        self.resumed_rss = 0
        self.interrupt = outcome.StepInterrupt()

    # ------------------------------------------------------------------------------ metrics
    def evaluate(self, split: str, stage: Stage | None = None) -> dict[str, float]:
        """Loss and the task's metric on ``split`` of the whole model (``stage=None``) or a unit."""
        with self.policy.autocast(self.device):
            through = self.par.evaluate(self, split, stage)  # a pipeline scores through its ranks
            if through is not None:
                return through
            return self.task.evaluate(self.learner, self.data, split, 2 * self.config.batch_size, self.device, stage)

    def evaluate_layers(self, split: str) -> dict[str, float]:
        """Each layer's own accuracy, for learners that expose per-layer scores (one process)."""
        if not self.par.layer_scores:
            return {}
        return layer_accuracies(self.learner, self.data, split, 2 * self.config.batch_size, self.device)

    # ----------------------------------------------------------------------------- training
    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):  # a non-finite score never becomes the best state
            return False
        best = self.state.best_metric
        if best is None:
            return True
        if self.stop_metric == "val_acc" and self.task.higher_is_better:
            return value > best + self.config.min_delta
        return value < best - self.config.min_delta

    def _train_epoch(self, stage: Stage, bar: Any) -> float:
        """One pass of the unit over the training set; returns the mean training loss. Losses stay
        on the device (:class:`LossLog`) and are read every ``log_every`` steps and at the end."""
        cfg, st = self.config, self.state
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", st.global_epoch))
        torch.manual_seed(derive_seed(cfg.seed, "draws", st.global_epoch))  # negatives, noise
        layers = [self.learner.local_layers[i] for i in stage.layers]
        epoch = st.epoch_in_stage + 1
        log = LossLog()
        saved = self.saved if cfg.measure_memory else contextlib.nullcontext()  # tuning trials skip the hooks
        mine = self.par.batches(self.data.train_batches(cfg.batch_size, gen), stage)  # a rank's share
        with metered_steps(mine, self.meter, saved, lambda: st.steps, cfg.warmup_steps, self.device) as batches:
            for batch in batches:
                logs = self.par.step(self.learner, to_device(batch, self.device), stage)
                self.policy.finish_step()  # a network-wide clip's parked steps; the step counter
                if self.policy.in_lr_warmup() or self.policy.step == self.policy.lr_warmup_steps:
                    self.policy.set_lr(self.optimizers)
                st.steps += 1
                st.samples += _batch_size(batch)
                log.add(logs)
                bar.update(1)
                for cb in self.callbacks:
                    cb.on_batch_end(self, stage, logs)
                if log.window_steps >= cfg.log_every:
                    self._log_point(log, layers, stage, epoch, bar)
                self.interrupt.check()  # Ctrl-C lands here, between steps (outcome.StepInterrupt)
            self._log_point(log, layers, stage, epoch, bar)
        self.par.check(outcome.check_parameters, layers, stage.name, epoch, st.steps)  # once per epoch
        self.par.end_epoch(self)
        return log.epoch_mean()

    def _log_point(self, log: LossLog, layers: list[LocalLayer], stage: Stage, epoch: int, bar: Any) -> None:
        """Read the losses accumulated since the last log point: progress bar, divergence check."""
        if not log.window_steps:
            return
        means = log.read()
        if self.config.progress and "loss" in means:
            bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
        self.par.check(outcome.check_step, means, layers, stage.name, epoch, self.state.steps)

    def _run_stage(self, stage: Stage) -> None:
        cfg, st = self.config, self.state
        self.meter.unit = stage.name  # probes (energy) attribute windows to the unit
        if self.device.type == "cuda" and st.steps >= cfg.warmup_steps:
            torch.cuda.reset_peak_memory_stats(self.device)
        stopped_early = False
        cap = cfg.epochs if stage.max_epochs is None else min(cfg.epochs, stage.max_epochs)
        metric = self.task.metric
        while st.epoch_in_stage < cap:
            self.learner.start_epoch(stage, st.epoch_in_stage + 1, cap)
            self.policy.start_epoch(self.optimizers, st.epoch_in_stage + 1, cap)  # the lr schedule
            for cb in self.callbacks:
                cb.on_epoch_start(self, stage, st.epoch_in_stage + 1)
            desc = f"{stage.name} {st.epoch_in_stage + 1}/{cap}"
            with tqdm(total=self.data.num_batches(cfg.batch_size), desc=desc, leave=False,
                      disable=not cfg.progress or None, unit="batch") as bar:
                train_loss = self._train_epoch(stage, bar)
            with self.meter.phase("validate"):
                val = self.evaluate("val", stage)
            value = val[metric] if self.stop_metric == "val_acc" else val["loss"]
            improved = self._improved(value)
            if improved:
                st.best_metric, st.best_epoch, st.bad_epochs = value, st.epoch_in_stage, 0
                if cfg.restore_best:
                    self._best_state = {k: v.detach().clone() for k, v in self.learner.state_dict().items()}
            else:
                st.bad_epochs += 1
            record = {
                "unit": stage.name, "epoch": st.epoch_in_stage + 1, "global_epoch": st.global_epoch + 1,
                "train_loss": train_loss, "val_loss": val["loss"], f"val_{metric}": val[metric],
                "best": improved,
            }
            st.history.append(record)
            st.epoch_in_stage += 1
            st.global_epoch += 1
            if cfg.progress:
                tqdm.write(
                    f"{stage.name:>10} epoch {record['epoch']:>3}  loss {train_loss:.4f}  "
                    f"val_loss {val['loss']:.4f}  val_{metric} {val[metric]:.4f}" + ("  *" if improved else "")
                )
            for cb in self.callbacks:
                cb.on_epoch_end(self, stage, record)
            stopped_early = st.bad_epochs >= cfg.patience
            if stopped_early:
                break
            self._checkpoint()
        if st.best_metric is None:
            raise outcome.never_finite(stage.name, self.stop_metric, st.epoch_in_stage, st.steps)
        self._finish_stage(stage, stopped_early)

    def _finish_stage(self, stage: Stage, stopped_early: bool) -> None:
        st = self.state
        if self.config.restore_best and self._best_state is not None:
            self.learner.load_state_dict(self._best_state)  # before the stage is frozen (Rule 2)
        if self.device.type == "cuda":
            self.cuda_peaks[stage.name] = int(torch.cuda.max_memory_allocated(self.device))
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
        snapshot.save(self)

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by this trainer and continue from its last epoch."""
        snapshot.restore(self, path)
        self.policy.step = self.state.steps  # loss and lr warm-ups continue where they stopped

    # ---------------------------------------------------------------------------------- fit
    def fit(self) -> dict[str, Any]:
        """Train every remaining unit, test once, write ``run.json``; returns the run record.

        A diverged run (now or in the checkpoint resumed from) is tested no further: its record
        has ``status = "diverged"`` and no scores in ``metrics`` (see :mod:`localearn.outcome`).
        """
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            with self.interrupt.installed(sigterm=self.par.mode == "none"):
                while self.state.diverged is None and self.state.stage_index < len(self.stages):
                    self._run_stage(self.stages[self.state.stage_index])
        except KeyboardInterrupt:
            self._write_run(run_record(self, "interrupted"))
            raise
        except outcome.Diverged as exc:
            outcome.record_divergence(self, exc.info)
        self.meter.unit = None
        if self.state.diverged is not None:
            result = run_record(self, "diverged")
        else:
            with self.meter.phase("test"):  # tuning trials never touch the test split (Rule 4)
                test = self.evaluate("test") if self.config.evaluate_test else None
                val = self.evaluate("val")
                classify = self.task.name == "classification" and self.config.evaluate_test
                layer_acc = self.evaluate_layers("test") if classify else {}
            result = run_record(self, "complete", test, val, layer_acc)
        spread = self.par.summary(self)  # per-rank time, bytes sent, waiting (a collective)
        if spread is not None:
            result["distributed"] = spread
        self._write_run(result)
        self.par.close()
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _write_run(self, result: dict[str, Any]) -> None:
        if self.out_dir is not None and self.par.is_main:
            write_json(result, self.out_dir / RUN_NAME)


def _batch_size(batch: Any) -> int:
    if hasattr(batch, "rows"):  # a pipeline rank's received batch
        return int(batch.rows)
    if isinstance(batch, (tuple, list)) and hasattr(batch[-1], "shape"):
        return int(batch[-1].shape[0])
    return int(getattr(batch, "num_nodes", 1))
