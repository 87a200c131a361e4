"""Training order that a resumed run can continue exactly.

The shuffle of epoch e depends only on (shuffle seed, e), not on how many times the process
started, and a run resumed after b finished batches of epoch e skips exactly those b batches.
`ResumableSampler` is a `DistributedSampler` (so Lightning keeps it under DDP instead of
wrapping it) that one process uses as a plain shuffling sampler.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Optional

from torch.utils.data import Dataset, DistributedSampler


class Position(NamedTuple):
    """Where training stands: `batches` finished batches (per process) of epoch `epoch`."""

    epoch: int
    batches: int


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
        return iter(indices)
