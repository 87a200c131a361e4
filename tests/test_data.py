"""Data modules on data the tests make (or that scikit-learn ships), in the real formats."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gmsop.data import DATA, MissingDataError, build_datamodule
from gmsop.data.fashion_mnist import FILES, read_idx


def test_registry_names():
    assert {"digits", "fashion_mnist", "imagefolder"} <= set(DATA.names())


def test_digits_fixed_stratified_split_and_batch_transform():
    dm = build_datamodule({"name": "digits", "image_size": 16})
    dm.setup()
    assert (len(dm._train), len(dm._val)) == (1437, 360)
    dm2 = build_datamodule({"name": "digits"})
    dm2.setup()
    assert torch.equal(dm._val.tensors[1], dm2._val.tensors[1])  # fixed split
    counts = torch.bincount(dm._val.tensors[1], minlength=10)
    assert counts.min() >= 35  # stratified: every class ~36 of 360
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    x = dm.transform(images, training=False)
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32
    dm.image_size = 8  # at native size the train set is exactly standardised (upsampling smooths)
    full = dm.transform(dm._train.tensors[0], training=False)
    assert abs(full.mean().item()) < 1e-5 and abs(full.std().item() - 1) < 1e-3


def _write_idx(path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 20)):
        _write_idx(tmp_path / FILES[f"{split}_images"], rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / FILES[f"{split}_labels"], (np.arange(n) % 10).astype(np.uint8))
    return tmp_path


def test_fashion_mnist_reads_idx_gz(tiny_fashion):
    arr = read_idx(tiny_fashion / FILES["train_images"])
    assert arr.shape == (40, 28, 28) and arr.dtype == np.uint8
    dm = build_datamodule({"name": "fashion_mnist", "root": str(tiny_fashion), "batch_size": 8, "train_subset": 30})
    dm.setup()
    assert (len(dm._train), len(dm._val)) == (30, 20)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 1, 28, 28) and labels.tolist() == list(range(8))
    assert dm.transform(images, training=True).shape == (8, 1, 32, 32)


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


def test_missing_fashion_folder_says_what_and_how(tmp_path):
    with pytest.raises(MissingDataError) as err:
        build_datamodule({"name": "fashion_mnist", "root": str(tmp_path / "nowhere")})
    msg = str(err.value)
    assert "nowhere" in msg and "train-images-idx3-ubyte.gz" in msg and "apt-get install dataset-fashion-mnist" in msg


def _image_tree(root, classes=("cat", "dog"), per_class=6, size=(20, 14)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_an_image_folder_class_with_one_image_is_named(tmp_path):
    """A stratified hold-out needs 2 images per class (scikit-learn's stratify error before)."""
    _image_tree(tmp_path / "flat", classes=("cat", "dog"), per_class=6)
    _image_tree(tmp_path / "flat", classes=("eel",), per_class=1)
    dm = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "flat"), "num_workers": 0})
    with pytest.raises(MissingDataError, match=r"flat/eel hold one image: the stratified hold-out"):
        dm.setup()
    _image_tree(tmp_path / "few", classes=("a", "b", "c"), per_class=2)
    dm = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "few"), "num_workers": 0})
    with pytest.raises(MissingDataError, match=r"cannot hold out data.val_fraction=0.1 of the 6 images"):
        dm.setup()


def test_imagefolder_split_and_presplit(tmp_path):
    _image_tree(tmp_path / "flat")
    dm = build_datamodule(
        {
            "name": "imagefolder",
            "root": str(tmp_path / "flat"),
            "image_size": 16,
            "val_fraction": 0.5,
            "num_workers": 0,
            "batch_size": 4,
        }
    )
    assert dm.num_classes == 2 and dm.num_channels == 3
    dm.setup()
    assert (len(dm._train), len(dm._val)) == (6, 6)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    _image_tree(tmp_path / "split" / "train", per_class=3)
    _image_tree(tmp_path / "split" / "val", per_class=2)
    dm = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "split"), "num_workers": 0, "grayscale": True})
    dm.setup()
    assert (len(dm._train), len(dm._val), dm.num_channels) == (6, 4, 1)


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist. Expected one sub-folder per class"):
        build_datamodule({"name": "imagefolder", "root": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="no class sub-folders"):
        build_datamodule({"name": "imagefolder", "root": str(tmp_path / "empty")})


def test_imagefolder_refuses_empty_class_folders_one_class_and_unreadable_images(tmp_path):
    _image_tree(tmp_path / "phantom")
    (tmp_path / "phantom" / "zebra").mkdir()  # a class folder with no images
    (tmp_path / "phantom" / "zebra" / "notes.txt").write_text("todo")
    dm = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "phantom"), "num_workers": 0})
    with pytest.raises(MissingDataError, match=r"class folder\(s\) .*zebra hold no images"):
        dm.setup()
    _image_tree(tmp_path / "one", classes=("cat",))
    with pytest.raises(MissingDataError, match=r"has 1 class folder\(s\) \(cat\); a classifier needs at least 2"):
        build_datamodule({"name": "imagefolder", "root": str(tmp_path / "one")})
    _image_tree(tmp_path / "corrupt", per_class=40)
    broken = tmp_path / "corrupt" / "dog" / "17.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = {"name": "imagefolder", "root": str(tmp_path / "corrupt"), "num_workers": 0, "stats_sample": 4}
    with pytest.raises(MissingDataError, match=r"1 unreadable image\(s\) under .*\n  .*dog/17.png"):
        build_datamodule(cfg).setup()  # found before training, though not in the 4-image statistics sample
    dm = build_datamodule({**cfg, "verify_images": False})
    dm.setup()
    index = [i for i, (path, _) in enumerate(dm._train.samples + dm._val.samples) if path == str(broken)][0]
    ds, i = (dm._train, index) if index < len(dm._train) else (dm._val, index - len(dm._train))
    with pytest.raises(MissingDataError, match=r"cannot read image .*dog/17.png"):
        ds[i]  # unchecked, it is still named when read
