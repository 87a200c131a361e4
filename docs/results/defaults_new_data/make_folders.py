"""Two image folders for checking the defaults on data they were not chosen on (issue: defaults for
new data). Both are plain PNG class folders read by `data=imagefolder`, as a user's own data would be.

- fashion_t10k/: the 10,000 Fashion-MNIST *test-file* images, 28x28 grayscale PNGs; train/ holds
  5,000 of them (stratified, seed 0), test/ 2,000 others. The defaults were chosen on images of the
  *training* file only, so none of these images was seen while choosing.
- digits28/: scikit-learn's 1,797 8x8 digits, upsampled to 28x28 (bilinear) PNGs; train/ 1,437,
  test/ 360 (stratified, seed 0). Another task at another size.

    python docs/results/defaults_new_data/make_folders.py OUT_DIR
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _write(root: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    for i in indices:
        folder = root / f"class{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def main(out: Path) -> None:
    images, labels = _idx(FASHION / "t10k-images-idx3-ubyte.gz"), _idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    train, rest = train_test_split(np.arange(len(labels)), train_size=5000, stratify=labels, random_state=0)
    test, _ = train_test_split(rest, train_size=2000, stratify=labels[rest], random_state=0)
    _write(out / "fashion_t10k" / "train", images, labels, train)
    _write(out / "fashion_t10k" / "test", images, labels, test)

    digits = load_digits()
    up = np.stack(
        [
            np.asarray(Image.fromarray(d).resize((28, 28), Image.BILINEAR))
            for d in (digits.images * 255 / 16).round().astype(np.uint8)
        ]
    )
    train, test = train_test_split(np.arange(len(digits.target)), test_size=360, stratify=digits.target, random_state=0)
    _write(out / "digits28" / "train", up, digits.target, train)
    _write(out / "digits28" / "test", up, digits.target, test)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
