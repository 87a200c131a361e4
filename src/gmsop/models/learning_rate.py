"""The learning rate a run trains at, and its optional linear warm-up.

`optim.lr` is a base rate stated for a reference batch (`optim.lr_reference_batch`, 256 as the
paper and timm's training script state their rates); the run trains at that rate scaled to its
global batch (images per optimiser step over all processes: the loader's batch x processes x
`trainer.accumulate_grad_batches`): linearly (Goyal et al. 2017, the default), by square root
(`optim.lr_scaling=sqrt`), or not at all (`optim.lr_scaling=none`: `optim.lr` is the rate).

`optim.warmup_epochs` adds a linear warm-up from `optim.warmup_start_factor` x the rate to the
rate, stepped per optimiser step; it multiplies into the epoch schedule (both are chainable
PyTorch schedulers), and both come back with a checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gmsop.registry import ConfigError

LR_SCALINGS = ("linear", "sqrt", "none")


@dataclass(frozen=True)
class LearningRate:
    """How the rate a run trains at follows from `optim.lr` and the global batch."""

    base: float  # optim.lr
    reference_batch: int  # optim.lr_reference_batch
    global_batch: int  # images per optimiser step, all processes together
    scaling: str  # optim.lr_scaling

    @property
    def factor(self) -> float:
        ratio = self.global_batch / self.reference_batch
        return {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.scaling]

    @property
    def rate(self) -> float:
        return self.base * self.factor

    def base_for(self, rate: float) -> float:
        """The optim.lr that trains at `rate` with this batch and scaling (for gmsop.lr_find)."""
        return rate / self.factor

    def describe(self) -> str:
        if self.scaling == "none":
            return f"learning rate {self.rate:.4g} (optim.lr, optim.lr_scaling=none: not scaled to the batch)"
        scale = "" if self.scaling == "linear" else "sqrt "
        return (
            f"learning rate {self.rate:.4g} = optim.lr {self.base:.4g} x {scale}({self.global_batch} / "
            f"{self.reference_batch}): global batch {self.global_batch}, base rate stated for "
            f"optim.lr_reference_batch={self.reference_batch}, optim.lr_scaling={self.scaling}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


def learning_rate(optim: Mapping[str, Any], global_batch: int) -> LearningRate:
    """The rate for this optim config at this global batch (a ConfigError names a bad value)."""
    validate_lr_keys(optim)
    if global_batch < 1:
        raise ConfigError(f"the global batch must be >= 1 image, got {global_batch}")
    return LearningRate(optim["lr"], optim["lr_reference_batch"], global_batch, optim["lr_scaling"])


def validate_lr_keys(optim: Mapping[str, Any]) -> None:
    """Fail early, naming the key, for an unknown scaling or an out-of-range value."""
    if optim["lr_scaling"] not in LR_SCALINGS:
        raise ConfigError(f"unknown optim.lr_scaling={optim['lr_scaling']!r}; allowed: {', '.join(LR_SCALINGS)}")
    for key, ok, allowed in (
        ("lr_reference_batch", optim["lr_reference_batch"] >= 1, ">= 1 (images)"),
        ("warmup_epochs", optim["warmup_epochs"] >= 0, ">= 0 (0: no warm-up)"),
        ("warmup_start_factor", 0 < optim["warmup_start_factor"] <= 1, "in (0, 1]"),
    ):
        if not ok:
            raise ConfigError(f"optim.{key}={optim[key]!r}; allowed: {allowed}")


def trainer_global_batch(trainer: Any, need_steps: bool) -> tuple[int, int]:
    """(global batch, optimiser steps per epoch; 0 unless need_steps) of a fitting trainer.

    With a data module that states its global batch (gmsop.data: data.batch_size) both come from
    it, without building a loader: the run's loaders are set up by Lightning after the checkpoint
    is restored (a loader built here, before that, trained a resumed run from the wrong place and
    lost its stop signals). Loaders passed to `fit` directly are set up as Lightning's
    `estimated_stepping_batches` does: their batch x world size, x accumulate_grad_batches."""
    accumulate = trainer.accumulate_grad_batches
    datamodule = trainer.datamodule
    if datamodule is not None and hasattr(datamodule, "train_batches_per_epoch"):
        batches = datamodule.train_batches_per_epoch(trainer.world_size) if need_steps else 0
        steps = math.ceil(_limited(batches, trainer.limit_train_batches) / accumulate)
        return datamodule.batch_size * accumulate, steps
    trainer.fit_loop.setup_data()
    loader = trainer.train_dataloader
    batch = getattr(loader, "batch_size", None)
    if batch is None and getattr(loader, "batch_sampler", None) is not None:
        batch = getattr(loader.batch_sampler, "batch_size", None)
    if batch is None:
        raise ConfigError(
            "cannot tell the training batch size (the train loader has no batch_size) to scale optim.lr to it; "
            "set optim.lr_scaling=none to train at optim.lr as written"
        )
    batches = trainer.num_training_batches
    steps = math.ceil(batches / accumulate) if math.isfinite(batches) else 0
    return batch * trainer.world_size * accumulate, steps


def _limited(batches: int, limit: int | float | None) -> int:
    """Lightning's trainer.limit_train_batches applied: an int is a number of batches, a float a fraction."""
    if limit is None:
        return batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit)


def warmup_scheduler(
    optimizer: torch.optim.Optimizer, optim: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LinearLR | None:
    """The linear warm-up over optim.warmup_epochs (rounded up to whole optimiser steps), or None.
    Build it after the epoch schedule: it multiplies into whatever rate that one set."""
    if not optim["warmup_epochs"]:
        return None
    if steps_per_epoch < 1:
        raise ConfigError(
            f"optim.warmup_epochs={optim['warmup_epochs']} needs the number of steps per epoch, and the train "
            "loader has no length; set optim.warmup_epochs=0"
        )
    steps = max(1, math.ceil(optim["warmup_epochs"] * steps_per_epoch))
    return torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=optim["warmup_start_factor"], end_factor=1.0, total_iters=steps
    )
