"""Downsampled ImageNet 64x64 (Chrabaszcz, Loshchilov & Hutter 2017) from its published batch files.

The folder holds train_data_batch_1..10 and val_data, as .npz or as python pickles, each
with 'data' (uint8 N x 12288, channel-major RGB planes) and 'labels' (1..1000). The first
use converts them, one batch at a time, into a uint8 memory-mapped cache (`cache_dir`,
default ROOT/.gmsop_cache), written atomically; afterwards images are read from the
memory map, so 1.28M images (15.7 GB) never have to fit in RAM twice, or at all.
Augmentation as in the paper: per-channel mean subtraction and a random horizontal flip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from gmsop.data.base import DATA, ImageDataModule
from gmsop.data.batch_files import chw_images, load_batch
from gmsop.data.errors import MissingDataError
from gmsop.paths import held_lock, remove_stale_temporaries, replace_atomically, write_text_atomic

SIZE = 64
ROW = 3 * SIZE * SIZE
TRAIN_FILES = [f"train_data_batch_{i}" for i in range(1, 11)]
VAL_FILES = ["val_data"]
HOW_TO_GET = (
    "Download 'Imagenet64_train' and 'Imagenet64_val' (npz or pickle) from https://image-net.org/download-images "
    "(downsampled variants), extract them into one folder, and set data.root to it."
)


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.npz", root / name):
        if candidate.is_file():
            return candidate
    return None


class MemmapImages(Dataset):
    """(uint8 3 x 64 x 64 tensor, label) pairs read from a memory-mapped N x 12288 cache.

    The map is opened lazily in each process and never pickled: a pickled np.memmap becomes
    a full in-memory copy, which DataLoader workers started with `spawn` would each receive.
    """

    def __init__(self, images: Path, labels: Path, rows: np.ndarray | None = None) -> None:
        self.path = Path(images)
        self.labels = np.load(labels)
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)  # the rows this set holds
        self.labels = self.labels[self.rows]
        self._images: np.memmap | None = None

    @property
    def images(self) -> np.memmap:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.images[self.rows[i]]).reshape(3, SIZE, SIZE)), int(self.labels[i])


def build_cache(files: Sequence[Path], out_images: Path, out_labels: Path, desc: str) -> dict:
    """Concatenate batch files into N x 12288 uint8 .npy (memmap) + int64 labels (0-based).

    Two passes (count, then copy) keep one batch in memory at a time; each file appears under
    its final name only when complete. Returns the per-channel mean of the images.
    """
    counts = [len(load_batch(f)["labels"]) for f in tqdm(files, desc=f"{desc}: counting")]
    total = sum(counts)
    labels = np.empty(total, dtype=np.int64)
    channel_sum = np.zeros(3, dtype=np.float64)

    def convert(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, ROW))
        start = 0
        for f, n in zip(tqdm(files, desc=f"{desc}: converting"), counts):
            batch = load_batch(f)
            data = chw_images(batch["data"], SIZE, f).reshape(n, ROW)
            lab = np.asarray(batch["labels"], dtype=np.int64)
            if lab.min() < 1 or lab.max() > 1000:
                raise ValueError(f"{f}: labels must be 1..1000, found {lab.min()}..{lab.max()}")
            images[start : start + n] = data
            labels[start : start + n] = lab - 1
            channel_sum[:] += data.reshape(n, 3, -1).sum(axis=(0, 2), dtype=np.float64)
            start += n
        images.flush()

    def save_labels(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # (np.save given a name would add .npy to it)
            np.save(f, labels)

    replace_atomically(out_images, convert)
    replace_atomically(out_labels, save_labels)
    return {"mean": (channel_sum / (total * SIZE * SIZE) / 255.0).tolist(), "count": total}


@DATA.register("imagenet64")
class ImageNet64DataModule(ImageDataModule):
    """Downsampled ImageNet-1K at 64x64: 1000 classes. Test is the published val_data (the split the
    paper reports on); val is a seeded stratified hold-out of the training batches (data.val_size,
    default 10,000: ten per class)."""

    num_classes = 1000
    num_channels = 3
    option_defaults = {"batch_size": 256, "image_size": 64, "num_workers": 8, "flip": True, "val_size": 10_000}

    def __init__(self, root: str = "data/imagenet64", cache_dir: str | None = None, **options) -> None:
        super().__init__(**self.with_defaults(options))
        self.root = Path(root).expanduser()
        self.train_files = [_find(self.root, n) for n in TRAIN_FILES]
        self.val_files = [_find(self.root, n) for n in VAL_FILES]
        missing = [n for n, f in zip(TRAIN_FILES + VAL_FILES, self.train_files + self.val_files) if f is None]
        if missing:
            raise MissingDataError(
                f"downsampled ImageNet 64x64 not found in data.root={self.root}: missing {', '.join(missing)} "
                f"(.npz or pickle). {HOW_TO_GET}"
            )
        self.cache = Path(cache_dir).expanduser() if cache_dir else self.root / ".gmsop_cache"

    def prepare_data(self) -> None:
        """Build the memory-mapped cache once (rank 0 only under DDP). Under a lock on the cache
        folder: runs started at once on the same data (sweep workers, a job array) build it once,
        the others wait for it; stats.json, written last, marks a finished cache, and a build
        killed midway leaves only temporary files, which the next build removes."""
        stats_file = self.cache / "stats.json"
        if stats_file.is_file():
            return
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            (self.cache / ".build.lock").touch()
        except OSError as e:  # a read-only data folder (the cache's default place)
            raise MissingDataError(
                f"cannot write the memory-mapped cache at {self.cache} ({e.strerror or e}): set "
                "data.cache_dir to a writable folder (it holds the data set once more, as uint8)"
            ) from None
        with held_lock(self.cache / ".build.lock"):
            if stats_file.is_file():  # another process built it while this one waited
                return
            remove_stale_temporaries(self.cache)  # we hold the lock: no live build owns them
            stats = {}
            for split, files in (("train", self.train_files), ("val", self.val_files)):
                stats[split] = build_cache(
                    files, self.cache / f"{split}_images.npy", self.cache / f"{split}_labels.npy", split
                )
            write_text_atomic(stats_file, json.dumps(stats))

    def datasets(self):
        self.prepare_data()
        files = {s: (self.cache / f"{s}_images.npy", self.cache / f"{s}_labels.npy") for s in ("train", "val")}
        train, val = self.hold_out(np.load(files["train"][1]), where=str(self.root))
        test = MemmapImages(*files["val"])  # the published val_data
        return MemmapImages(*files["train"], train), test if val is None else MemmapImages(*files["train"], val), test

    def channel_stats(self):
        """Per-channel mean of the training images; std 1: mean subtraction only, as in the paper."""
        stats = json.loads((self.cache / "stats.json").read_text())
        return stats["train"]["mean"], [1.0, 1.0, 1.0]
