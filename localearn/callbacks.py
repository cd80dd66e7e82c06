"""The Trainer's callback hooks, and the callback shipped with localearn: Optuna pruning.

docs/concepts/protocol.md#rule-4: a pruner, if one is used, must see a step axis comparable across arms:
validation of the *whole model* at matched data passes, never a stage's local metric. So this
callback evaluates ``predict()`` on the validation split after every epoch (metered in the
``validate`` window, outside training cost) and reports it at step = data passes so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localearn.learner import Stage

if TYPE_CHECKING:
    from torch import Tensor

    from localearn.trainer import Trainer


class Callback:
    """Hooks into the Trainer's loop; override what you need. ``on_batch_end`` receives the step's
    losses as device tensors (reading one on the host costs a device sync per step)."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, stage: Stage, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, stage: Stage, logs: dict[str, Tensor]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, stage: Stage, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None: ...


class OptunaPruning(Callback):
    """Report whole-model validation accuracy to an Optuna trial; raise ``TrialPruned`` when told.

    Args:
        trial: the ``optuna.Trial`` being evaluated.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, stage: Stage, record: dict[str, Any]) -> None:
        import optuna

        with trainer.meter.phase("validate"):
            accuracy = trainer.evaluate("val")[trainer.task.metric]  # accuracy (ROC-AUC for link runs)
        record["model_val_accuracy"] = accuracy
        step = record["global_epoch"]  # one epoch of any unit = one pass over the training set
        self.trial.report(accuracy, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at data pass {step} with validation accuracy {accuracy:.4f}")
