"""Data sets of image files decoded per read: the base of `imagefolder` and `cub`.

A subclass lists (path, label) samples for training and for testing; this base holds val out of
the first (gmsop.data.splits), checks that the files open, decodes them to uint8 tensors of
image_size x image_size, and estimates channel statistics. `crop` picks how an image becomes that square:
- "resize": the whole image, resized (small images, the paper's data);
- "fine_grained": training takes a random resized crop (scale 0.08-1, torchvision's), evaluation
  resizes the short side to image_size / 0.875 and takes the centre crop, as fine-grained
  fine-tuning does at 448 px. Horizontal flips are `data.flip` (on the device, for every data set).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm.auto import tqdm

from gmsop.data.base import ImageDataModule, uint8_channel_stats
from gmsop.data.errors import MissingDataError
from gmsop.data.sampling import SeededPerSample

Sample = tuple[str, int]
EVAL_CROP_FRACTION = 0.875  # centre crop of the resized image (e.g. 512 -> 448)


class Crop(StrEnum):
    resize = "resize"
    fine_grained = "fine_grained"


def decode_pipeline(size: int, crop: Crop, training: bool) -> v2.Compose:
    """PIL image -> uint8 C x size x size tensor."""
    steps: list = [v2.PILToTensor()]
    if crop == Crop.resize:
        steps.append(v2.Resize((size, size), antialias=True))
    elif training:
        steps.append(v2.RandomResizedCrop(size, antialias=True))
    else:
        steps += [v2.Resize(round(size / EVAL_CROP_FRACTION), antialias=True), v2.CenterCrop(size)]
    return v2.Compose(steps)


class ImageFiles(SeededPerSample):
    """(path, label) samples -> (uint8 C x S x S tensor, label), decoded and cropped per read
    (random crops seeded per sample and epoch: see SeededPerSample)."""

    def __init__(self, samples: list[Sample], pipeline: v2.Compose, mode: str) -> None:
        self.samples, self.pipeline, self.mode = samples, pipeline, mode

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return self.pipeline(in_mode(img, self.mode, path)), label
        except (OSError, SyntaxError, ValueError) as e:
            bad = unreadable_images([p for p, _ in self.samples], decode=True)
            raise MissingDataError(
                unreadable_message(bad or [(path, str(e))], f"the {len(self.samples)} images of this split")
            ) from None


# Modes with more than 8 bits a sample, and the top of their range: PIL's convert() clips these to
# 255 (a 16-bit image turns white), so they are scaled to 8 bits here ("I": PIL's mode for 16-bit
# PNGs in some versions, 32-bit integers in general; read when its values fit 16 bits).
DEEP_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def in_mode(img: Image.Image, mode: str, path: str) -> Image.Image:
    """`img` converted to `mode` ("L" or "RGB") as its user sees it: images deeper than 8 bits
    (16-bit, 32-bit integer, float) are scaled from their range (0-65535; float 0-1) to 0-255,
    not clipped; values outside that range are refused naming the file and mode."""
    top = DEEP_MODES.get(img.mode)
    if top is None:
        return img.convert(mode)
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min(initial=0)), float(values.max(initial=0))
    if low < 0 or high > top:
        raise ValueError(
            f"{path}: mode {img.mode} with values from {low:g} to {high:g}; only 0 to {top:g} can be read "
            f"as an image's intensity (save it as 8- or 16-bit, or scale it to that range)"
        )
    eight_bit = Image.fromarray(np.round(values * (255.0 / top)).astype(np.uint8), "L")
    return eight_bit.convert(mode)


def unreadable_message(bad: list[tuple[str, str]], where: str) -> str:
    """One error for every unreadable file found: the count and the first ten, each with its reason."""
    listed = "\n  ".join(f"{p} ({why})" for p, why in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return f"{len(bad)} unreadable image(s) among {where}:\n  {listed}{more}\nremove or replace them"


def unreadable_images(paths: list[str], decode: bool = False) -> list[tuple[str, str]]:
    """(path, reason) for every file that PIL cannot open and verify (header and structure; fast),
    or with `decode`, also decode whole and read as an image (slower: what a truncated file fails)."""

    def check(path: str):
        try:
            with Image.open(path) as img:
                if decode:
                    in_mode(img, "RGB", path)
                else:
                    img.verify()
            return None
        except Exception as e:  # PIL raises many types for bad files
            return path, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(check, paths, chunksize=64)
        found = tqdm(results, total=len(paths), desc="checking images", disable=len(paths) < 5000, leave=False)
        return [r for r in found if r is not None]


class ImageFilesDataModule(ImageDataModule):
    """Base: subclasses set class_names/num_classes and implement `samples()`."""

    class_names: list[str]

    def __init__(
        self,
        grayscale: bool = False,
        *,
        stats_sample: int = 2000,
        verify_images: bool = True,
        crop: Crop = Crop.resize,
        **options,
    ) -> None:
        super().__init__(**options)
        self.num_channels = 1 if grayscale else 3
        self.stats_sample, self.verify_images, self.crop = stats_sample, verify_images, Crop(crop)
        self._stats_ds: Optional[ImageFiles] = None

    @abstractmethod
    def samples(self) -> tuple[list[Sample], list[Sample]]:
        """(training, test) lists of (image path, class index); val is held out of the first."""

    def where(self) -> str:
        """Where the files are, for error messages."""
        return str(getattr(self, "root", "data.root"))

    def datasets(self):
        pool, test = self.samples()
        kept, held = self.hold_out([label for _, label in pool], where=self.where())
        train = [pool[i] for i in kept]
        if self.verify_images:
            bad = unreadable_images([path for path, _ in pool + test])
            if bad:
                raise MissingDataError(
                    unreadable_message(bad, f"the images under {self.where()}")
                    + " (or data.verify_images=false to find them while training)"
                )
        mode = "L" if self.num_channels == 1 else "RGB"
        eval_pipeline = decode_pipeline(self.image_size, self.crop, training=False)
        self._stats_ds = ImageFiles(train, eval_pipeline, mode)
        test_set = ImageFiles(test, eval_pipeline, mode)
        val_set = test_set if held is None else ImageFiles([pool[i] for i in held], eval_pipeline, mode)
        return ImageFiles(train, decode_pipeline(self.image_size, self.crop, training=True), mode), val_set, test_set

    def channel_stats(self):
        """Estimated on up to `stats_sample` training images (seeded; evaluation crops)."""
        ds = self._stats_ds
        if ds is None:
            raise RuntimeError("channel_stats() before datasets()")
        n = min(self.stats_sample, len(ds))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
        return uint8_channel_stats(torch.stack([ds[int(i)][0] for i in idx]))
