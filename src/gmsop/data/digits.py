"""scikit-learn's digits: 1,797 real 8x8 grey images, the embedded default data set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gmsop.data.base import DATA, TensorImageDataModule


@DATA.register("digits")
class DigitsDataModule(TensorImageDataModule):
    """Digits upsampled to `image_size`, with a fixed stratified train/val split (seeded)."""

    num_classes = 10
    num_channels = 1

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 32,
        num_workers: int = 0,
        flip: bool = False,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, image_size, num_workers, flip, eval_batch_size)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def arrays(self):
        digits = load_digits()
        images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
        xtr, xva, ytr, yva = train_test_split(
            images, digits.target, test_size=self.val_fraction, random_state=self.split_seed, stratify=digits.target
        )
        return torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xva), torch.from_numpy(yva).long()
