"""Fashion-MNIST from its IDX .gz files in a local folder (nothing is downloaded)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from gmsop.data.base import DATA, TensorImageDataModule
from gmsop.data.errors import MissingDataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
HOW_TO_GET = (
    "On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (puts them in "
    f"{DEFAULT_ROOT}); elsewhere download the four files from "
    "https://github.com/zalandoresearch/fashion-mnist and set data.root to their folder."
)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its dtype and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {arr.size} values (truncated file?)")
    return arr.reshape(shape)


@DATA.register("fashion_mnist")
class FashionMNISTDataModule(TensorImageDataModule):
    """Fashion-MNIST, 28x28 grey, resized to image_size: test is the 10k t10k images, val a
    seeded stratified hold-out of the 60k training images (data.val_size, else data.val_fraction).

    `train_subset`/`test_subset` take a fixed random subset (seeded by `subset_seed`) of the
    training images left after the hold-out, and of the test images, for CPU-sized runs.
    """

    num_classes = 10
    num_channels = 1
    option_defaults = {"batch_size": 128, "flip": True}

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        train_subset: int | None = None,
        test_subset: int | None = None,
        subset_seed: int = 0,
        **options,
    ) -> None:
        super().__init__(**self.with_defaults(options))
        self.root = Path(root).expanduser()
        missing = [name for name in FILES.values() if not (self.root / name).is_file()]
        if missing:
            raise MissingDataError(
                f"Fashion-MNIST not found in data.root={self.root}: missing {', '.join(missing)}. {HOW_TO_GET}"
            )
        self.train_subset, self.test_subset, self.subset_seed = train_subset, test_subset, subset_seed

    def _read(self, images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(read_idx(self.root / FILES[images_key]).copy())[:, None]
        return x, torch.from_numpy(read_idx(self.root / FILES[labels_key]).astype(np.int64))

    def _subset(self, n: int, subset: int | None) -> torch.Tensor:
        """Indices of a fixed random subset of `subset` of n items (all of them without one)."""
        if subset is None or subset >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.subset_seed))[:subset].sort().values

    def datasets(self):
        train, val, test = super().datasets()
        if self.train_subset is not None:
            x, y = train.tensors
            keep = self._subset(len(y), self.train_subset)
            train = TensorDataset(x[keep], y[keep])
        return train, val, test

    def arrays(self):
        xte, yte = self._read("test_images", "test_labels")
        keep = self._subset(len(yte), self.test_subset)
        return *self._read("train_images", "train_labels"), xte[keep], yte[keep]
