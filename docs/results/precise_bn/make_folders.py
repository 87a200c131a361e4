"""The three image folders of the precise-BN study, none of which any default was chosen on.

- fashion_t10k/ and digits28/: as docs/results/defaults_new_data/make_folders.py writes them
  (Fashion-MNIST *test-file* images; scikit-learn's digits upsampled to 28x28).
- textures/: another kind of image: 32x32 colour textures in 10 classes, each class a pair of
  sinusoidal gratings (its own two orientations and frequencies) with random phases, contrast,
  colours and noise per image; 5,000 training and 1,000 test images. Classes differ in how the
  channels co-vary across positions, not in a shape.

    python docs/results/precise_bn/make_folders.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "defaults_new_data"))
import make_folders as defaults_folders  # noqa: E402


def texture(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One uint8 size x size x 3 image of class `cls`."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size, 3))
    for j in range(2):
        angle = np.pi * ((cls * 0.37 + j * 0.5) % 1.0) + rng.normal(0, 0.08)
        freq = 2 + ((cls * 3 + j * 5) % 7) + rng.normal(0, 0.3)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * x + np.sin(angle) * y) + rng.uniform(0, 2 * np.pi))
        image += wave[..., None] * rng.uniform(0.2, 1.0, 3) * rng.uniform(0.3, 1.0)
    image += rng.normal(0, 0.6, image.shape) + rng.uniform(-0.5, 0.5, 3)
    return np.clip(127.5 + 60 * image, 0, 255).astype(np.uint8)


def write_textures(root: Path, train: int = 500, test: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for cls in range(10):
            folder = root / split / f"texture{cls}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(texture(cls, rng)).save(folder / f"{i:04d}.png")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    defaults_folders.main(out)
    write_textures(out / "textures")
