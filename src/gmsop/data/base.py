"""Shared data-module machinery: uint8 images in, normalised float batches out.

Every source yields uint8 C x H x W images; resizing, scaling, mean/std normalisation and
the random horizontal flip run once per batch after transfer to the device (fast on GPU,
no per-image Python work on CPU).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gmsop.registry import Registry

DATA: Registry["ImageDataModule"] = Registry("data")


def build_datamodule(cfg) -> "ImageDataModule":
    """Build a registered data module from a config mapping with a `name` key."""
    return DATA.build(cfg, path="data")


class ImageDataModule(L.LightningDataModule, ABC):
    """Base: subclasses set num_classes/num_channels/class_names and implement `datasets()`.

    `datasets()` returns (train, val) datasets of (uint8 C x H x W image, int label) pairs;
    `channel_stats()` returns per-channel mean and std in [0, 1] units.
    """

    num_classes: int
    num_channels: int

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 32,
        num_workers: int = 0,
        flip: bool = False,
        eval_batch_size: Optional[int] = None,
    ) -> None:
        super().__init__()
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
        self.mean = torch.zeros(1)
        self.std = torch.ones(1)

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) datasets of (uint8 C x H x W image, int label)."""

    @abstractmethod
    def channel_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        """Per-channel (mean, std) in [0, 1] units, known after datasets()."""

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is None:
            self._train, self._val = self.datasets()
            mean, std = self.channel_stats()
            self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._val, self.eval_batch_size, shuffle=False)

    def _loader(self, ds: Optional[Dataset], batch_size: int, shuffle: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError("data module used before setup()")
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(ds) > batch_size,  # no size-1 BN batches in training
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform(images, training), labels

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
        """(train images uint8 N x C x H x W, train labels, val images, val labels)."""

    def datasets(self) -> tuple[Dataset, Dataset]:
        xtr, ytr, xva, yva = self.arrays()
        self._stats = uint8_channel_stats(xtr)
        return TensorDataset(xtr, ytr), TensorDataset(xva, yva)

    def channel_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        return self._stats


def uint8_channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N x C x H x W images, in [0, 1] units."""
    x = images.double().div(255.0).transpose(0, 1).flatten(1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()
