"""CUB-200-2011's folder format and the fine-grained crops (tiny fabricated folders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gmsop.data import MissingDataError, build_datamodule
from gmsop.data.image_files import Crop, ImageFiles, decode_pipeline
from gmsop.data.sampling import ResumableSampler


def _cub(root, classes=(3, 7, 9), per_class=4, size=(40, 30)):
    """CUB layout: class ids need not be 0..N-1 (here 3, 7, 9); even image ids train, odd test."""
    rng = np.random.default_rng(0)
    images, labels, split = [], [], []
    image_id = 0
    for c in classes:
        folder = root / "images" / f"{c:03d}.Bird_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image_id += 1
            rel = f"{folder.name}/Bird_{c}_{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(image_id % 2 == 0)}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in classes))
    (root / "bounding_boxes.txt").write_text("1 0 0 10 10\n")  # ignored
    return root


def test_cub_format_lists_splits_and_labels(tmp_path):
    """Test: the test list, whole; val: a stratified hold-out of the training list."""
    root = _cub(tmp_path / "CUB_200_2011", per_class=8)
    cfg = {"name": "cub", "root": str(root), "image_size": 16, "batch_size": 2, "num_workers": 0}
    dm = build_datamodule({**cfg, "val_fraction": 0.25})
    assert dm.num_classes == 3 and dm.class_names == ["003.Bird_3", "007.Bird_7", "009.Bird_9"]
    train, test = dm.samples()
    assert len(train) == len(test) == 12
    assert [label for _, label in train] == [0] * 4 + [1] * 4 + [2] * 4  # class ids 3, 7, 9 -> 0, 1, 2
    assert train[0][0].endswith("images/003.Bird_3/Bird_3_1.jpg")  # image id 2 (even): training
    dm.setup()
    assert dm._test.samples == test and sorted(dm._train.samples + dm._val.samples) == sorted(train)
    assert sorted(label for _, label in dm._val.samples) == [0, 1, 2]  # one per class
    images, labels, _ = next(iter(dm.test_dataloader()))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8 and labels.tolist() == [0, 0]


def test_cub_errors_name_the_file_and_how_to_get_the_data(tmp_path):
    with pytest.raises(MissingDataError, match=r"missing images.txt, image_class_labels.txt, .*vision.caltech.edu"):
        build_datamodule({"name": "cub", "root": str(tmp_path / "nowhere")})
    root = _cub(tmp_path / "a")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    with pytest.raises(MissingDataError, match=r"disagree on image ids \[3, 4, 5"):
        build_datamodule({"name": "cub", "root": str(root)})
    root = _cub(tmp_path / "b")
    next((root / "images").rglob("*.jpg")).unlink()
    with pytest.raises(MissingDataError, match=r"1 image\(s\) listed in .*images.txt are missing"):
        build_datamodule({"name": "cub", "root": str(root)})
    root = _cub(tmp_path / "c")
    (root / "images.txt").write_text("1\n")
    with pytest.raises(MissingDataError, match=r"images.txt, line 1: expected '<id> <value>'"):
        build_datamodule({"name": "cub", "root": str(root)})


def test_fine_grained_eval_crop_hand_made_case():
    """80x40 image, left half red, right half blue; size 28: the short side goes to
    round(28 / 0.875) = 32 (64x32), then the centre 28x28 spans columns 18..45: 14 red, 14 blue."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40, 0] = 255
    pixels[:, 40:, 2] = 255
    out = decode_pipeline(28, Crop.fine_grained, training=False)(Image.fromarray(pixels))
    assert out.shape == (3, 28, 28)
    assert (out[0, :, :12] > 240).all() and (out[2, :, :12] < 15).all()  # red (away from the blurred edge)
    assert (out[2, :, 16:] > 240).all() and (out[0, :, 16:] < 15).all()  # blue


def test_fine_grained_training_crops_are_random_and_resize_is_not():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    train = decode_pipeline(24, Crop.fine_grained, training=True)
    torch.manual_seed(0)
    crops = [train(img) for _ in range(4)]
    assert all(c.shape == (3, 24, 24) for c in crops)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    resize = decode_pipeline(24, Crop.resize, training=True)
    assert torch.equal(resize(img), resize(img))


def test_a_training_crop_depends_only_on_the_seed_the_epoch_and_the_image(tmp_path):
    """What makes a resumed run see the same crops (tests/test_exact_resume.py does it end to end)."""
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    ds = ImageFiles([(str(path), 0)] * 3, decode_pipeline(24, Crop.fine_grained, training=True), "RGB")
    ds.seed = 7
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = ds[1]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left as it was
    torch.manual_seed(123)
    assert torch.equal(ds[1][0], first[0])  # whatever the process drew before
    assert not torch.equal(ds[1 + 3][0], first[0])  # the same image in epoch 1: another crop
    ds.seed = 8
    assert not torch.equal(ds[1][0], first[0])
    sampler = ResumableSampler(ds, batch_size=1, seed=0)
    sampler.set_epoch(2)
    assert sorted(sampler) == [6, 7, 8]  # keys name the epoch: 2 * len + index


def test_imagefolder_takes_the_fine_grained_crops(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.png"
                )
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 20, "num_workers": 0, "crop": "fine_grained"}
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm._train.pipeline.transforms[1].__class__.__name__ == "RandomResizedCrop"
    assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (20, 20)
    with pytest.raises(ValueError, match=r"crop.*'square'"):
        build_datamodule({**cfg, "crop": "square"})
