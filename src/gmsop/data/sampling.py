"""Training order, and random augmentations, that a resumed run can continue exactly.

The shuffle of epoch e depends only on (shuffle seed, e), not on how many times the process
started, and a run resumed after b finished batches of epoch e skips exactly those b batches.
`ResumableSampler` is a `DistributedSampler` (so Lightning keeps it under DDP instead of
wrapping it) that one process uses as a plain shuffling sampler. A dataset that draws random
augmentations itself (`SeededPerSample`) gets keys from it that name the epoch too, and draws
each sample's randomness from (seed, epoch, index) alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class Position(NamedTuple):
    """Where training stands: `batches` finished batches (per process) of epoch `epoch`."""

    epoch: int
    batches: int


class SeededPerSample(Dataset, ABC):
    """Base of datasets that draw random augmentations per sample (e.g. random resized crops,
    decoded in the data loader's processes); subclasses implement `__len__` and `read(index)`.

    `ResumableSampler` passes such a dataset keys `epoch * len(dataset) + index`, and `read` runs
    with torch's generator seeded from (seed, epoch, index), restored afterwards. A sample's
    augmentation then depends neither on the loader process that decodes it nor on what that
    process drew before, so a run resumed mid-epoch draws exactly the augmentations of an
    uninterrupted one. Plain indices (validation, statistics) are keys of epoch 0."""

    seed: int = 0  # the data module's shuffle seed (carried by checkpoints), set with each training loader

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples (keys of one epoch)."""

    @abstractmethod
    def read(self, index: int) -> Any:
        """Sample `index`, drawing its randomness from torch's (seeded) CPU generator."""

    def __getitem__(self, key: int) -> Any:
        epoch, index = divmod(int(key), len(self))
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what fork_rng restores): torch.manual_seed also seeds every
            # accelerator's, 90 us a sample where this whole call takes about 25 us
            seed = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            torch.default_generator.manual_seed(int(seed))
            return self.read(index)


class ResumableSampler(DistributedSampler):
    """Shuffles with seed + epoch (set by Lightning through `set_epoch`); `resume_at` skips the
    batches a resumed run already trained, in that epoch only."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self._skip: Optional[Position] = None

    def resume_at(self, position: Position) -> None:
        """Start in `position.epoch`, after its first `position.batches` batches."""
        if position.batches < 0 or position.batches * self.batch_size > self.num_samples:
            raise ValueError(
                f"cannot resume after {position.batches} batches of {self.batch_size}: the epoch has "
                f"{self.num_samples} samples per process"
            )
        self.set_epoch(position.epoch)
        self._skip = position

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._skip is not None and self._skip.epoch == self.epoch:
            indices = indices[self._skip.batches * self.batch_size :]
        self._skip = None  # one resume only; the next epochs are whole
        if isinstance(self.dataset, SeededPerSample):  # keys that name the epoch (see SeededPerSample)
            indices = [self.epoch * len(self.dataset) + i for i in indices]
        return iter(indices)


class EachOnce(DistributedSampler):
    """Evaluation order under DDP: process r of n takes images r, r + n, r + 2n, ... in order, so
    each image is evaluated once over all processes (some take one fewer). A DistributedSampler
    pads the last processes' shares with repeated images, which validation counted twice (17 images
    counted as 18); a DistributedSampler subclass, so Lightning keeps it instead of wrapping it."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))
