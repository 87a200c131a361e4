"""Training callbacks shared by every run."""

from __future__ import annotations

import time

import lightning as L


class Throughput(L.Callback):
    """Training images per second, per epoch (logged as train/images_per_s)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0
        self._epoch_images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_images = 0
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_images += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dt = time.perf_counter() - self._t0
        self.images += self._epoch_images
        self.seconds += dt
        if dt > 0:
            pl_module.log("train/images_per_s", self._epoch_images / dt)

    def summary(self) -> dict[str, float]:
        return {"train_images_per_s": self.images / self.seconds} if self.seconds > 0 else {}
