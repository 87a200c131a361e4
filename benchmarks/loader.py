"""Section (f): the data loader's training images/s, to set beside the model's (section d).

Both input paths are measured through their data modules as training uses them (sampler,
DataLoader workers, the uint8 -> normalised, flipped float transform on the device): the
ImageNet-64 memory-mapped cache, built from synthetic batch files in the published format, and
an image folder of synthetic JPEGs decoded and resized per read. Files go to a temporary folder.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gmsop.data import build_datamodule
from gmsop.data.imagenet64 import ROW, TRAIN_FILES, VAL_FILES


def _imagenet64_files(root: Path, per_file: int, rng: np.random.Generator) -> None:
    """Batch files as published: pickles of {'data': uint8 N x 12288, 'labels': 1..1000}."""
    for name in TRAIN_FILES + VAL_FILES:
        rows = rng.integers(0, 256, (per_file, ROW), dtype=np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({"data": rows, "labels": rng.integers(1, 1001, per_file).tolist()}, f)


def _image_folder(root: Path, classes: int, per_class: int, size: int, rng: np.random.Generator) -> None:
    """root/train/CLASS/*.jpg with per_class images, and one image per class in root/val/CLASS."""
    for split, count in (("train", per_class), ("val", 1)):
        for c in range(classes):
            folder = root / split / f"class_{c:03d}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def loader_images_per_s(cfg: dict[str, Any], device: torch.device, batches: int) -> float:
    """Training images/s of a data module's loader over `batches` batches after the first
    (which pays for starting the workers), transform on `device` included."""
    dm = build_datamodule(cfg)
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    next(loader)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        images, _labels = next(loader)
        x = dm.transform(images.to(device, non_blocking=True), training=True)
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def loader_rows(device: torch.device, batch: int, batches: int, workers: int | None = None) -> list[dict[str, Any]]:
    """Images/s of both input paths with `workers` loader processes (default: one per CPU, up to 8)."""
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    images = batch * (batches + 1)  # the first batch and the timed ones
    rows = []
    with tempfile.TemporaryDirectory(prefix="gmsop-bench-") as tmp:
        root = Path(tmp)
        (root / "imagenet64").mkdir()
        _imagenet64_files(root / "imagenet64", per_file=max(1, images // len(TRAIN_FILES) + 1), rng=rng)
        _image_folder(root / "folder", classes=10, per_class=images // 10 + 1, size=80, rng=rng)
        # every synthetic image trains (no val hold-out: these few random labels cannot be stratified)
        common = {"batch_size": batch, "num_workers": workers, "select_on_test": True}
        for path, cfg in (
            ("imagenet64 memmap", {"name": "imagenet64", "root": str(root / "imagenet64"), **common}),
            (
                "image folder (JPEG 80px -> 64px)",
                {"name": "imagefolder", "root": str(root / "folder"), **common},
            ),
        ):
            ips = loader_images_per_s(cfg, device, batches)
            rows.append({"path": path, "workers": workers, "batch": batch, "images_per_s": ips})
    return rows
