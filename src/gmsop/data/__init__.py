"""Data modules behind one registry (`DATA`): digits (embedded default), fashion_mnist, imagefolder."""

from gmsop.data import digits, fashion_mnist, imagefolder  # noqa: F401  (register entries)
from gmsop.data.base import DATA, ImageDataModule, build_datamodule
from gmsop.data.errors import MissingDataError

__all__ = ["DATA", "ImageDataModule", "MissingDataError", "build_datamodule"]
