"""Callbacks that steer a run for the tests that need it, through the real CLI
(`+callbacks.pace._target_=tests.pace.Pace`).

- `Pace` slows training (and `test_seconds`: the test stage) down without changing it, for tests
  that signal a run mid-epoch: a run on digits is otherwise done before a signal lands.
- `ScriptedValidation` logs val/top1_err a second time each epoch with a scripted value; Lightning
  averages the two logs, so the epoch's value is (real + scripted) / 2. With scripted values 0.05
  and 0.9 and real errors in [0, 1], the epoch scripted 0.05 is the best on val whatever the
  model does: which checkpoint is chosen is known in advance.
"""

from __future__ import annotations

import time

import lightning as L
import torch


class Pace(L.Callback):
    def __init__(self, seconds: float = 0.2, test_seconds: float = 0.0) -> None:
        self.seconds, self.test_seconds = seconds, test_seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)

    def on_test_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.test_seconds)


class ScriptedValidation(L.Callback):
    def __init__(self, errors: list[float]) -> None:
        self.errors = list(errors)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        own = pl_module.on_validation_epoch_end  # (Lightning calls the module's hook after the callbacks')

        def scripted() -> None:
            own()
            if not trainer.sanity_checking:
                pl_module.log("val/top1_err", torch.tensor(self.errors[trainer.current_epoch]), prog_bar=True)

        pl_module.on_validation_epoch_end = scripted
