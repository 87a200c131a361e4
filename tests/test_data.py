"""Data modules on data the tests make (or that scikit-learn ships), in the real formats."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from gmsop.data import DATA, MissingDataError, build_datamodule
from gmsop.data.fashion_mnist import FILES, read_idx
from gmsop.data.splits import stratified_hold_out
from gmsop.registry import ConfigError


def test_registry_names():
    assert {"digits", "fashion_mnist", "imagefolder"} <= set(DATA.names())


def _rows(ds) -> Counter:
    """A tensor data set's (image bytes, label) pairs, as a multiset."""
    x, y = ds.tensors
    return Counter((img.numpy().tobytes(), int(label)) for img, label in zip(x, y))


def test_digits_three_way_split_and_batch_transform():
    """Train, val and test partition the 1,797 images; test is fixed, val a seeded stratified hold-out."""
    dm = build_datamodule({"name": "digits", "image_size": 16})
    dm.setup()
    assert (len(dm._train), len(dm._val), len(dm._test)) == (1149, 288, 360)
    digits = load_digits()
    everything = Counter(
        (np.clip(img * 16.0, 0, 255).astype(np.uint8)[None].tobytes(), int(t))
        for img, t in zip(digits.images, digits.target)
    )
    assert _rows(dm._train) + _rows(dm._val) + _rows(dm._test) == everything  # a partition (as multisets)
    assert not (set(_rows(dm._val)) & set(_rows(dm._test)))
    assert torch.bincount(dm._val.tensors[1], minlength=10).min() >= 27  # stratified: every class ~29 of 288
    assert torch.bincount(dm._test.tensors[1], minlength=10).min() >= 35  # every class ~36 of 360
    again = build_datamodule({"name": "digits"})
    again.setup()
    assert _rows(again._val) == _rows(dm._val) and _rows(again._test) == _rows(dm._test)  # reproducible
    other = build_datamodule({"name": "digits", "split_seed": 1})
    other.setup()
    assert _rows(other._test) == _rows(dm._test) and _rows(other._val) != _rows(dm._val)  # test fixed, val seeded
    published = build_datamodule({"name": "digits", "select_on_test": True})
    published.setup()
    assert published._val is published._test and len(published._train) == 1437 and published.selected_on == "test"
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    x = dm.transform(images, training=False)
    assert x.shape == (64, 1, 16, 16) and x.dtype == torch.float32
    dm.image_size = 8  # at native size the train set is exactly standardised (upsampling smooths)
    full = dm.transform(dm._train.tensors[0], training=False)
    assert abs(full.mean().item()) < 1e-5 and abs(full.std().item() - 1) < 1e-3
    images, labels, index = next(iter(dm.test_dataloader()))  # test batches carry each image's index
    assert torch.equal(index, torch.arange(len(labels))) and torch.equal(images, dm._test.tensors[0][: len(labels)])


def test_stratified_hold_out_counts_seeds_and_errors():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    kept, held = stratified_hold_out(labels, fraction=0.1, size=None, seed=3)
    assert len(held) == 10 and not set(kept) & set(held) and len(kept) + len(held) == 100
    assert np.bincount(labels[held], minlength=4).tolist() == [1, 2, 3, 4]  # in proportion
    kept2, held2 = stratified_hold_out(labels, fraction=0.5, size=20, seed=3)  # size wins over fraction
    assert len(held2) == 20 and np.bincount(labels[held2]).tolist() == [2, 4, 6, 8]
    assert np.array_equal(stratified_hold_out(labels, fraction=0.1, size=None, seed=3)[1], held)
    with pytest.raises(MissingDataError, match=r"class\(es\) b of x hold one image"):
        stratified_hold_out([0, 0, 1], fraction=0.5, size=None, seed=0, where="x", class_names=["a", "b"])
    with pytest.raises(MissingDataError, match=r"cannot hold out data.val_size=1 of the 4 images"):
        stratified_hold_out([0, 0, 1, 1], fraction=0.5, size=1, seed=0)
    with pytest.raises(ConfigError, match=r"data.val_fraction=1.5; allowed: in \(0, 1\)"):
        build_datamodule({"name": "digits", "val_fraction": 1.5})
    with pytest.raises(ConfigError, match=r"data.val_size=0"):
        build_datamodule({"name": "digits", "val_size": 0})


def _write_idx(path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        _write_idx(tmp_path / FILES[f"{split}_images"], rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / FILES[f"{split}_labels"], (np.arange(n) % 10).astype(np.uint8))
    return tmp_path


def test_fashion_mnist_reads_idx_gz(tiny_fashion):
    arr = read_idx(tiny_fashion / FILES["train_images"])
    assert arr.shape == (40, 28, 28) and arr.dtype == np.uint8
    dm = build_datamodule(
        {"name": "fashion_mnist", "root": str(tiny_fashion), "batch_size": 8, "val_size": 10, "train_subset": 25}
    )
    dm.setup()
    assert (len(dm._train), len(dm._val), len(dm._test)) == (25, 10, 20)  # val from the 40 training images
    assert torch.bincount(dm._val.tensors[1], minlength=10).tolist() == [1] * 10  # stratified
    train_file = read_idx(tiny_fashion / FILES["train_images"])
    test_file = read_idx(tiny_fashion / FILES["test_images"])
    assert torch.equal(dm._test.tensors[0][:, 0], torch.from_numpy(test_file.copy()))  # test: the t10k file, whole
    rows = {img.tobytes(): i for i, img in enumerate(train_file)}
    train_rows = {rows[img[0].numpy().tobytes()] for img in dm._train.tensors[0]}
    val_rows = {rows[img[0].numpy().tobytes()] for img in dm._val.tensors[0]}
    assert len(train_rows) == 25 and len(val_rows) == 10 and not train_rows & val_rows
    images, labels, index = next(iter(dm.test_dataloader()))
    assert images.shape == (8, 1, 28, 28) and labels.tolist() == list(range(8)) and index.tolist() == list(range(8))
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
    with pytest.raises(MissingDataError, match=r"class\(es\) eel of .*flat hold one image: the stratified hold-out"):
        dm.setup()
    _image_tree(tmp_path / "few", classes=("a", "b", "c"), per_class=2)
    dm = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "few"), "num_workers": 0})
    with pytest.raises(MissingDataError, match=r"class\(es\) a, b, c of .*few hold one image: .*data.val_fraction=0.1"):
        dm.setup()  # two images per class: one is the test split's, the other cannot be split into train and val


def _paths(ds) -> set[str]:
    return {path for path, _ in ds.samples}


def test_imagefolder_three_way_split_and_presplit(tmp_path):
    _image_tree(tmp_path / "flat", per_class=10)
    cfg = {"name": "imagefolder", "root": str(tmp_path / "flat"), "image_size": 16, "num_workers": 0, "batch_size": 4}
    dm = build_datamodule({**cfg, "val_fraction": 0.25, "test_fraction": 0.2})
    assert dm.num_classes == 2 and dm.num_channels == 3
    dm.setup()
    assert (len(dm._train), len(dm._val), len(dm._test)) == (12, 4, 4)
    parts = [_paths(ds) for ds in (dm._train, dm._val, dm._test)]
    assert set.union(*parts) == {str(p) for p in (tmp_path / "flat").rglob("*.png")} and sum(map(len, parts)) == 20
    assert {label for _, label in dm._test.samples} == {0, 1}  # stratified
    other = build_datamodule({**cfg, "val_fraction": 0.25, "test_fraction": 0.2, "split_seed": 5})
    other.setup()
    assert _paths(other._test) == parts[2] and _paths(other._val) != parts[1]  # the test split is fixed
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    for test_folder in ("val", "test"):  # root/train + root/test (or root/val): that folder is the test split
        root = tmp_path / f"split_{test_folder}"
        _image_tree(root / "train", per_class=10)
        _image_tree(root / test_folder, per_class=2)
        dm = build_datamodule({"name": "imagefolder", "root": str(root), "num_workers": 0, "grayscale": True})
        dm.setup()
        assert (len(dm._train), len(dm._val), len(dm._test), dm.num_channels) == (18, 2, 4, 1)
        assert _paths(dm._test) == {str(p) for p in (root / test_folder).rglob("*.png")}
        assert not (_paths(dm._train) | _paths(dm._val)) & _paths(dm._test)


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
    with pytest.raises(MissingDataError, match=r"1 unreadable image\(s\) among the images under .*\n  .*dog/17.png"):
        build_datamodule(cfg).setup()  # found before training, though not in the 4-image statistics sample
    dm = build_datamodule({**cfg, "verify_images": False})
    dm.setup()
    index = [i for i, (path, _) in enumerate(dm._train.samples + dm._val.samples) if path == str(broken)][0]
    ds, i = (dm._train, index) if index < len(dm._train) else (dm._val, index - len(dm._train))
    one_named = r"1 unreadable image\(s\) among the \d+ images of this split:\n  .*17.png"
    with pytest.raises(MissingDataError, match=one_named):
        ds[i]  # unchecked, it is still named when read


def _write_16bit(path: Path, value: int, rng: np.random.Generator, size: int = 12) -> None:
    pixels = np.clip(value + rng.normal(0, 1500, (size, size)), 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # mode I;16


def test_deep_images_are_scaled_from_their_range_not_clipped(tmp_path):
    from gmsop.data.image_files import in_mode

    rng = np.random.default_rng(0)
    _write_16bit(tmp_path / "a.png", 30000, rng)
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "I;16"
        rgb = np.asarray(in_mode(img, "RGB", "a.png"))
        assert img.convert("RGB").getextrema()[0][0] == 255  # (what PIL's own convert does: white)
    assert abs(rgb.mean() - 30000 * 255 / 65535) < 3 and rgb.std() > 1  # scaled, the variation kept
    floats = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))  # mode F, in [0, 1]
    assert np.asarray(in_mode(floats, "L", "f.tif")).tolist() == [[128] * 4] * 4
    with pytest.raises(ValueError, match=r"big.tif: mode F with values from 0 to 300; only 0 to 1 can be read"):
        in_mode(Image.fromarray(np.array([[0.0, 300.0]], dtype=np.float32)), "L", "big.tif")


def test_every_unreadable_image_is_listed_in_one_error_when_one_is_read(tmp_path):
    _image_tree(tmp_path / "two_bad", per_class=10)
    for name in ("cat/1.png", "dog/3.png"):
        good = (tmp_path / "two_bad" / name).read_bytes()
        (tmp_path / "two_bad" / name).write_bytes(good[: len(good) // 2])  # truncated: verify() does not see it
    cfg = {"name": "imagefolder", "root": str(tmp_path / "two_bad"), "num_workers": 0, "stats_sample": 2}
    with pytest.raises(MissingDataError, match=r"2 unreadable image\(s\) among the images under"):
        build_datamodule(cfg).setup()  # checked before training: both named
    dm = build_datamodule({**cfg, "verify_images": False})
    dm.setup()  # unchecked: found when one is read, and then every one is named
    with pytest.raises(MissingDataError, match=r"2 unreadable image\(s\) among .*\n  .*cat/1.png .*\n  .*dog/3.png"):
        for i in range(len(dm._train)):
            dm._train[i]
        for i in range(len(dm._val)):
            dm._val[i]


@pytest.mark.slow
def test_a_folder_of_16_bit_images_whose_classes_differ_only_in_intensity_trains(tmp_path):
    """Clipped to 255 (PIL's convert), both classes were white and training stayed at chance."""
    from gmsop.run.training import run_training
    from tests.test_config import compose_train

    rng = np.random.default_rng(1)
    for i in range(60):
        _write_16bit(tmp_path / "deep" / ("dim" if i % 2 else "bright") / f"{i}.png", 20000 if i % 2 else 45000, rng)
    cfg = compose_train(
        "head=gap", "data=imagefolder", f"data.root={tmp_path / 'deep'}", "data.image_size=16", "data.num_workers=0",
        "data.batch_size=8", "data.val_size=12", "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
        "logger=no_wandb", "optim.lr=0.4", f"runs_dir={tmp_path / 'runs'}",
    )  # fmt: skip
    result = run_training(cfg, tmp_path / "run")
    assert result.best["val/top1_err"] <= 0.1, result.best
