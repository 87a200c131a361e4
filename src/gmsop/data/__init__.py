"""Data modules behind one registry (`DATA`): digits (embedded default), fashion_mnist, imagefolder,
cifar (10/100 python pickles), imagenet64 (downsampled ImageNet batch files), cub (CUB-200-2011)."""

from gmsop.data import cifar, cub, digits, fashion_mnist, imagefolder, imagenet64  # noqa: F401  (register entries)
from gmsop.data.base import DATA, ImageDataModule, build_datamodule
from gmsop.data.errors import MissingDataError

__all__ = ["DATA", "ImageDataModule", "MissingDataError", "build_datamodule"]
