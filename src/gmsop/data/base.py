"""Shared data-module machinery: uint8 images in, normalised float batches out.

Every source yields uint8 C x H x W images; resizing, scaling, mean/std normalisation and
the random horizontal flip run once per batch after transfer to the device (fast on GPU,
no per-image Python work on CPU).

The training order is saved in every checkpoint (`state_dict`): a resumed run sees exactly the
batches an uninterrupted run would have seen, also when it stopped in the middle of an epoch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gmsop.data.sampling import EachOnce, Position, ResumableSampler, SeededPerSample
from gmsop.data.splits import SELECTED_ON_TEST, SELECTED_ON_VAL, check_hold_out, stratified_hold_out
from gmsop.registry import ConfigError, Registry, option_defaults
from gmsop.stop_signals import StopSignalSafeLoader

DATA: Registry[ImageDataModule] = Registry("data")


def build_datamodule(cfg) -> ImageDataModule:
    """Build a registered data module from a config mapping with a `name` key."""
    return DATA.build(cfg, path="data")


class ImageDataModule(L.LightningDataModule, ABC):
    """Base: subclasses set num_classes/num_channels/class_names and implement `datasets()`.

    `datasets()` returns (train, val, test) datasets of (uint8 C x H x W image, int label) pairs:
    test the data set's own evaluation split, val held out of its training data (`hold_out`;
    gmsop.data.splits); `channel_stats()` returns per-channel mean and std in [0, 1] units.
    The options here (loading, and how val is held out) are every data set's: a data set declares
    the defaults it changes in `option_defaults` and forwards `**options` (`with_defaults`).
    """

    num_classes: int
    num_channels: int

    def __init__(
        self,
        *,
        batch_size: int = 64,
        image_size: int = 32,
        num_workers: int = 0,
        flip: bool = False,
        eval_batch_size: Optional[int] = None,
        val_fraction: float = 0.1,
        val_size: Optional[int] = None,
        split_seed: int = 0,
        select_on_test: bool = False,
    ) -> None:
        super().__init__()
        check_hold_out(val_fraction, val_size)
        self.val_fraction, self.val_size, self.split_seed = val_fraction, val_size, split_seed
        self.select_on_test = select_on_test
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if image_size < 4:
            raise ValueError(f"data.image_size must be >= 4, got {image_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.image_size = image_size
        self.num_workers = num_workers
        self.flip = flip
        self._train: Optional[Dataset] = None
        self._val: Optional[Dataset] = None
        self._test: Optional[Dataset] = None
        self.mean = torch.zeros(1)
        self.std = torch.ones(1)
        self._given_stats: Optional[tuple[Sequence[float], Sequence[float]]] = None  # see normalise_with
        # drawn from the (seeded) global generator, then carried by checkpoints
        self.shuffle_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self._resume_at: Optional[Position] = None
        self._said_batch = False

    @classmethod
    def with_defaults(cls, options: dict[str, Any]) -> dict[str, Any]:
        """`options` over this data set's defaults for the options it inherits (`option_defaults`)."""
        return option_defaults(cls) | options

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """(train, val, test) datasets of (uint8 C x H x W image, int label); `hold_out` splits
        train from val."""

    def hold_out(self, labels, where: str = "") -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(train, val) indices into the training data of these `labels`: val a seeded stratified
        hold-out (data.val_size images, or data.val_fraction of them); with data.select_on_test
        (the published protocol) every index trains and val is None (the test split stands in)."""
        if self.select_on_test:
            return np.arange(len(labels)), None
        return stratified_hold_out(
            labels,
            fraction=self.val_fraction,
            size=self.val_size,
            seed=self.split_seed,
            where=where,
            class_names=getattr(self, "class_names", None),
        )

    @property
    def selected_on(self) -> str:
        """The split that choices (best.ckpt, early stopping, sweeps) read: "val", or "test" with
        data.select_on_test."""
        return SELECTED_ON_TEST if self.select_on_test else SELECTED_ON_VAL

    @abstractmethod
    def channel_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        """Per-channel (mean, std) in [0, 1] units, known after datasets()."""

    def normalise_with(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise with these per-channel statistics (those that pretrained weights were trained
        with) instead of the data set's own."""
        self._given_stats = (list(mean), list(std))

    @property
    def normalisation_source(self) -> str:
        """Whose mean/std the inputs are normalised with: "weights" (normalise_with) or "data"."""
        return "data" if self._given_stats is None else "weights"

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is None:
            self._train, self._val, self._test = self.datasets()
            mean, std = self._given_stats or self.channel_stats()
            self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset(self._train)
        if isinstance(ds, SeededPerSample):
            ds.seed = self.shuffle_seed
        trainer = self.trainer
        world_size = trainer.world_size if trainer else 1
        batch = self.per_process_batch(world_size)
        sampler = ResumableSampler(
            ds, batch, self.shuffle_seed, num_replicas=world_size, rank=trainer.global_rank if trainer else 0
        )
        if self._resume_at is not None:
            sampler.resume_at(self._resume_at)
            self._resume_at = None
        elif trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        # the loader's own generator: starting its iterator must not draw from the global one,
        # which the model's randomness (noise, dropout, flips) continues across a resume
        return StopSignalSafeLoader(
            ds,
            rank=trainer.global_rank if trainer else 0,
            batch_size=batch,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            drop_last=_drops_last_batch(sampler.num_samples, batch),
        )

    def train_batches_per_epoch(self, world_size: int) -> int:
        """The batches each of world_size processes trains on per epoch (what train_dataloader's
        loader yields), without building the loader."""
        batch = split_global_batch(self.batch_size, world_size)
        samples = ResumableSampler(self._dataset(self._train), batch, self.shuffle_seed, world_size).num_samples
        return samples // batch if _drops_last_batch(samples, batch) else math.ceil(samples / batch)

    def per_process_batch(self, world_size: int) -> int:
        """data.batch_size is the global batch (the paper's 256): each of the world_size processes of
        a DDP job takes batch_size / world_size images per step."""
        share = split_global_batch(self.batch_size, world_size)
        if world_size > 1 and self.trainer is not None and self.trainer.is_global_zero and not self._said_batch:
            print(f"global batch {self.batch_size}: {world_size} processes x {self.batch_size // world_size} images")
            self._said_batch = True
        return share

    def statistics_batches(
        self, count: int, epoch: int, rank: int = 0, world_size: int = 1, device: Optional[torch.device] = None
    ) -> Iterator[torch.Tensor]:
        """`count` batches of training images (normalised as for evaluation: no flip) for
        re-estimating BatchNorm statistics (gmsop.callbacks.precise_bn): each process's share of the
        global batch, drawn from (shuffle seed, epoch, rank) alone, so a resumed run draws the same
        ones and the global random generators are not touched. Fewer when the training set is smaller."""
        ds = self._dataset(self._train)
        batch = split_global_batch(self.batch_size, world_size)
        seed = np.random.SeedSequence([self.shuffle_seed, epoch, rank, 0x42_4E]).generate_state(1)[0]
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(int(seed)))[: count * batch]
        loader = StopSignalSafeLoader(
            ds,
            rank=rank,
            batch_size=batch,
            sampler=order.tolist(),
            num_workers=min(self.num_workers, count),
            drop_last=len(order) > batch,  # (no size-1 BatchNorm batches)
            generator=torch.Generator().manual_seed(int(seed)),
        )
        for images, *_ in loader:
            yield self.transform(images.to(device) if device is not None else images, training=False)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self._val)

    def test_dataloader(self) -> DataLoader:
        """The test split, each image with its index (for the run's per-image predictions)."""
        return self._evaluation_loader(Indexed(self._dataset(self._test)))

    def _evaluation_loader(self, ds: Optional[Dataset]) -> DataLoader:
        # A loader's own generator here too: every iterator a loader starts draws a seed for its
        # processes, from the global generator if the loader has none. With persistent processes a
        # fresh run starts the validation iterator in the sanity check, a run resumed mid-epoch (no
        # sanity check) at its first validation: the global draws, and so the random flips after
        # it, would differ from the uninterrupted run's.
        ds = self._dataset(ds)
        trainer = self.trainer
        world_size = trainer.world_size if trainer else 1
        return StopSignalSafeLoader(
            ds,
            rank=trainer.global_rank if trainer else 0,
            batch_size=self.eval_batch_size,
            # each image once over all processes (a DistributedSampler pads with repeats, which val counted)
            sampler=EachOnce(ds, world_size, trainer.global_rank) if world_size > 1 else None,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.shuffle_seed),
        )

    @staticmethod
    def _dataset(ds: Optional[Dataset]) -> Dataset:
        if ds is None:
            raise RuntimeError("data module used before setup()")
        return ds

    # -- checkpoints: where training stands in the data -------------------------------------
    def state_dict(self) -> dict:
        position = self._position()  # as a plain list: checkpoints load with weights_only
        return {"shuffle_seed": self.shuffle_seed, "position": list(position) if position else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shuffle_seed = state_dict["shuffle_seed"]
        self._resume_at = Position(*state_dict["position"]) if state_dict.get("position") else None

    def _position(self) -> Optional[Position]:
        """The next batch to train: after the finished batches of the current epoch, or the next
        epoch's first once every batch of this one has finished. (Between an epoch's end and the
        next one's start, where a stop signal saves, trainer.current_epoch is already the next
        epoch while the batch count is still the ended one's: a save there resumed an epoch late,
        shuffled as the epoch after it, once loader processes fetched ahead.)"""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        epochs = trainer.fit_loop.epoch_progress.current
        if epochs.completed >= epochs.started:  # no epoch running: the next one starts at its first batch
            return Position(trainer.current_epoch, 0)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            return Position(trainer.current_epoch + 1, 0)
        return Position(trainer.current_epoch, done)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, *index = batch  # (test batches also carry each image's index)
        training = self.trainer is not None and self.trainer.training
        return (self.transform(images, training), labels, *index)

    def transform(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """uint8 B x C x H x W -> normalised float32 B x C x S x S (S = image_size)."""
        x = images.float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if training and self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


class TensorImageDataModule(ImageDataModule):
    """Base for sources that fit in memory as uint8 tensors (digits, Fashion-MNIST, ...)."""

    @abstractmethod
    def arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(training images uint8 N x C x H x W, their labels, test images, test labels); val is
        held out of the training images here."""

    def datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        x, y, xte, yte = self.arrays()
        train, val = self.hold_out(y.numpy())
        train_set = TensorDataset(x[train], y[train])
        test_set = TensorDataset(xte, yte)
        self._stats = uint8_channel_stats(x[train])
        return train_set, test_set if val is None else TensorDataset(x[val], y[val]), test_set

    def channel_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        return self._stats


def _drops_last_batch(samples: int, batch: int) -> bool:
    """Training loaders drop a last partial batch (no size-1 BatchNorm batches), unless it is the only one."""
    return samples > batch


def split_global_batch(batch_size: int, world_size: int, processes: str = "trainer.devices x trainer.num_nodes") -> int:
    """Each process's share of the global batch data.batch_size; a ConfigError naming the keys when
    the `world_size` processes (named by `processes`) cannot share it evenly."""
    if world_size < 1 or batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch, split evenly over the {world_size} "
            f"processes ({processes}): give a multiple of {world_size}"
        )
    return batch_size // world_size


class Indexed(Dataset):
    """A dataset's items with their index appended: (image, label, index)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        return (*self.dataset[i], i)


def uint8_channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N x C x H x W images, in [0, 1] units."""
    x = images.double().div(255.0).transpose(0, 1).flatten(1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()
