"""Readers for the published batch-file formats: CIFAR python pickles, downsampled-ImageNet npz/pickle."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np


def load_batch(path: Path) -> dict[str, Any]:
    """A batch file as a dict with str keys: `.npz` (numpy) or a python pickle (CIFAR, ImageNet64)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def chw_images(data: np.ndarray, size: int, path: Path) -> np.ndarray:
    """N x (3*size*size) channel-major rows -> uint8 N x 3 x size x size."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * size * size:
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected N x {3 * size * size} (3 x {size} x {size})")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, size, size)
