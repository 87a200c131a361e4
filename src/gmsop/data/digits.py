"""scikit-learn's digits: 1,797 real 8x8 grey images, the embedded default data set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gmsop.data.base import DATA, TensorImageDataModule

# The data set has no official test split: a fixed stratified fifth (360 images) is the test split,
# the same for every run and seed; val is then held out of the other 1,437 (data.val_fraction).
TEST_FRACTION, TEST_SEED = 0.2, 0


@DATA.register("digits")
class DigitsDataModule(TensorImageDataModule):
    """Digits upsampled to `image_size`: a fixed test split, and val a seeded stratified hold-out
    of the rest (a fifth by default: 1,149 train / 288 val / 360 test)."""

    num_classes = 10
    num_channels = 1
    option_defaults = {"val_fraction": 0.2}

    def __init__(self, **options) -> None:
        super().__init__(**self.with_defaults(options))

    def arrays(self):
        digits = load_digits()
        images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
        x, xte, y, yte = train_test_split(
            images, digits.target, test_size=TEST_FRACTION, random_state=TEST_SEED, stratify=digits.target
        )
        return torch.from_numpy(x), torch.from_numpy(y).long(), torch.from_numpy(xte), torch.from_numpy(yte).long()
