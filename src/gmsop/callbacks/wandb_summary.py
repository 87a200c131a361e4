"""The W&B run summary keeps each validation metric's best value."""

from __future__ import annotations

import lightning as L

from gmsop.run_folder.log import VAL_METRICS


class WandbBestSummary(L.Callback):
    """The W&B run summary keeps each validation metric's minimum (the best epoch), not only its
    last value. Set when training starts: by then Lightning has created the W&B run (creating it
    earlier can find the id still held by the W&B service of a process just killed)."""

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                for key in VAL_METRICS:
                    logger.experiment.define_metric(key, summary="min")
