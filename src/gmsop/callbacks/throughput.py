"""Training throughput (images/s), logged and summed up for summary.json."""

from __future__ import annotations

from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage

from gmsop.callbacks.lightning_internals import timed_throughput


def _images(batch) -> int:
    return len(batch[1])


class TrainingThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor for training: every log_every_n_steps, the images and seconds
    of training so far in this process (train/samples, train/time) and, once `window` batches
    have passed, images/s over the last `window` (train/device/samples_per_sec; with several
    processes also train/samples_per_sec); and the whole run's images/s for summary.json.

    Validation is timed (Lightning takes its time out of training time) but not logged: Lightning
    logs it with validation batch numbers as steps, which would interleave with the training
    steps of the CSV log.
    """

    def __init__(self, window: int = 10) -> None:
        super().__init__(batch_size_fn=_images, window_size=window)

    def _compute(self, trainer, iter_num: int | None = None) -> None:
        if trainer.state.stage == RunningStage.TRAINING:
            super()._compute(trainer, iter_num)

    def summary(self) -> dict[str, float]:
        """{"train_images_per_s": images/s over all training steps of this process} ({} before any)."""
        throughput = timed_throughput(self, RunningStage.TRAINING)
        if throughput is None:
            return {}
        so_far = throughput.compute()
        return {"train_images_per_s": so_far["samples"] * throughput.world_size / so_far["time"]}
