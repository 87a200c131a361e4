"""Any folder of class sub-folders (torchvision's ImageFolder layout)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from gmsop.data.base import DATA, ImageDataModule, uint8_channel_stats
from gmsop.data.errors import MissingDataError


class _UInt8Images(Dataset):
    """(path, label) samples -> (uint8 C x S x S tensor, label), resized once per read."""

    def __init__(self, samples: list[tuple[str, int]], size: int, mode: str) -> None:
        self.samples, self.mode = samples, mode
        self.resize = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return self.resize(img.convert(self.mode)), label
        except (OSError, SyntaxError, ValueError) as e:
            raise MissingDataError(f"cannot read image {path}: {e}; remove or replace the file") from None


def unreadable_images(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) for every file that PIL cannot open and verify (header and structure; fast)."""

    def check(path: str):
        try:
            with Image.open(path) as img:
                img.verify()
            return None
        except Exception as e:  # PIL raises many types for bad files
            return path, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(check, paths, chunksize=64)
        found = tqdm(results, total=len(paths), desc="checking images", disable=len(paths) < 5000, leave=False)
        return [r for r in found if r is not None]


@DATA.register("imagefolder")
class ImageFolderDataModule(ImageDataModule):
    """root/CLASS/*.jpg; or root/train/CLASS and root/val/CLASS when both exist.

    Without train/ and val/ sub-folders, a seeded stratified `val_fraction` split is used.
    Images are resized to image_size x image_size when read.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        image_size: int = 64,
        num_workers: int = 2,
        flip: bool = True,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        grayscale: bool = False,
        stats_sample: int = 2000,
        verify_images: bool = True,
    ) -> None:
        super().__init__(batch_size, image_size, num_workers, flip, eval_batch_size)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingDataError(
                f"image folder data.root={self.root} does not exist. Expected one sub-folder per class "
                "(root/CLASS/img.jpg), or root/train/CLASS/... and root/val/CLASS/...; "
                "set data.root to such a folder."
            )
        split_dirs = (self.root / "train", self.root / "val")
        self.presplit = all(d.is_dir() for d in split_dirs)
        class_root = split_dirs[0] if self.presplit else self.root
        if not any(p.is_dir() for p in class_root.iterdir()):
            raise MissingDataError(f"no class sub-folders in {class_root}; expected {class_root}/CLASS/img.jpg")
        self.class_names, self.class_to_idx = find_classes(str(class_root))
        if len(self.class_names) < 2:
            raise MissingDataError(
                f"{class_root} has {len(self.class_names)} class folder(s) "
                f"({', '.join(self.class_names)}); a classifier needs at least 2"
            )
        self.num_classes = len(self.class_names)
        self.verify_images = verify_images
        self.num_channels = 1 if grayscale else 3
        self.val_fraction, self.split_seed, self.stats_sample = val_fraction, split_seed, stats_sample

    def _samples(self, folder: Path) -> list[tuple[str, int]]:
        samples = make_dataset(str(folder), self.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not samples:
            raise MissingDataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
        empty = sorted(set(self.class_names) - {self.class_names[label] for _, label in samples})
        if empty:
            raise MissingDataError(
                f"class folder(s) {', '.join(str(folder / c) for c in empty)} hold no images "
                f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder(s), or each becomes a class never seen"
            )
        if self.verify_images:
            bad = unreadable_images([path for path, _ in samples])
            if bad:
                listed = "\n  ".join(f"{p} ({why})" for p, why in bad[:10])
                more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
                raise MissingDataError(
                    f"{len(bad)} unreadable image(s) under {folder}:\n  {listed}{more}\n"
                    "remove or replace them (or data.verify_images=false to find them while training)"
                )
        return samples

    def datasets(self):
        if self.presplit:
            train, val = self._samples(self.root / "train"), self._samples(self.root / "val")
        else:
            samples = self._samples(self.root)
            train, val = train_test_split(
                samples, test_size=self.val_fraction, random_state=self.split_seed, stratify=[s[1] for s in samples]
            )
        mode = "L" if self.num_channels == 1 else "RGB"
        self._train_ds = _UInt8Images(train, self.image_size, mode)
        return self._train_ds, _UInt8Images(val, self.image_size, mode)

    def channel_stats(self):
        """Estimated on up to `stats_sample` training images (seeded)."""
        n = min(self.stats_sample, len(self._train_ds))
        idx = torch.randperm(len(self._train_ds), generator=torch.Generator().manual_seed(0))[:n]
        return uint8_channel_stats(torch.stack([self._train_ds[int(i)][0] for i in idx]))
