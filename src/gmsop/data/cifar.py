"""CIFAR-10 / CIFAR-100 from their standard local python-pickle folders (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gmsop.data.base import DATA, TensorImageDataModule
from gmsop.data.batch_files import chw_images, load_batch
from gmsop.data.errors import MissingDataError

LAYOUTS = {
    10: {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": "labels",
    },
    100: {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "labels": "fine_labels"},
}


@DATA.register("cifar")
class CIFARDataModule(TensorImageDataModule):
    """root holds cifar-10-batches-py/ (or cifar-100-python/), or is that folder itself.

    Test on the test batch; val is a seeded stratified hold-out of the training batches
    (data.val_fraction, default 5,000 of 50,000); 32x32 RGB, random flip.
    """

    num_channels = 3

    option_defaults = {"batch_size": 128, "flip": True}

    def __init__(self, root: str = "data/cifar", classes: int = 10, **options) -> None:
        super().__init__(**self.with_defaults(options))
        if classes not in LAYOUTS:
            raise ValueError(f"data.classes must be 10 or 100, got {classes}")
        layout = LAYOUTS[classes]
        root_path = Path(root).expanduser()
        folder = root_path if root_path.name == layout["folder"] else root_path / layout["folder"]
        missing = [f for f in layout["train"] + layout["test"] if not (folder / f).is_file()]
        if missing:
            raise MissingDataError(
                f"CIFAR-{classes} not found: {folder} lacks {', '.join(missing)}. Download the 'python version' "
                "from https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and set data.root to the folder "
                f"that contains {layout['folder']}/."
            )
        self.folder, self.layout, self.num_classes = folder, layout, classes

    def _read(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for name in names:
            batch = load_batch(self.folder / name)
            images.append(chw_images(batch["data"], 32, self.folder / name))
            labels.append(np.asarray(batch[self.layout["labels"]], dtype=np.int64))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    def arrays(self):
        return (*self._read(self.layout["train"]), *self._read(self.layout["test"]))
