"""Reports a sweep trial's metric to Optuna after each validation; stops a hopeless trial."""

from __future__ import annotations

import math

import lightning as L
import optuna

from gmsop.run_folder import Curves


class PruneTrial(L.Callback):
    """Report the sweep metric to the Optuna trial after each validation; stop a hopeless trial.

    (What hydra-optuna-sweeper cannot do: it never sees a trial object.)
    """

    def __init__(self, trial: optuna.Trial, metric: str, earlier: Curves | None = None) -> None:
        """`earlier`: the curves of the run this trial continues; its epochs count toward the score."""
        self.trial, self.metric = trial, metric
        self.values: dict[int, float] = {}  # epoch -> the metric
        for epoch, row in sorted((earlier or {}).items()):
            if not math.isnan(row.get(metric, math.nan)):
                self.values[epoch] = row[metric]
                trial.report(row[metric], step=epoch)

    def score(self, objective: str, direction: str) -> float:
        """The trial's value: its best epoch's (min or max by direction) or its last epoch's."""
        if not self.values:
            raise KeyError(f"metric {self.metric!r} was never logged at a validation")
        if objective == "last":
            return self.values[max(self.values)]
        return (min if direction == "minimize" else max)(self.values.values())

    def on_validation_end(self, trainer, pl_module) -> None:
        """(Not on_validation_epoch_end: callbacks run before the model's hook that logs this
        epoch's error, so the metric there would still be the previous epoch's.)"""
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.values[trainer.current_epoch] = value = float(trainer.callback_metrics[self.metric])
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} at epoch {trainer.current_epoch} is worse than the median")
