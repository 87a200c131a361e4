"""CIFAR pickles and downsampled-ImageNet batch files, made tiny in their published formats."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gmsop.data import MissingDataError, build_datamodule
from gmsop.data.imagenet64 import TRAIN_FILES


def _pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * size * size), dtype=np.uint8)


def test_cifar10_and_100_from_python_pickles(tmp_path):
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for i in range(1, 6):
        _pickle(c10 / f"data_batch_{i}", {b"data": _rows(4, 32, i), b"labels": [i % 10] * 4})
    test_rows = _rows(6, 32, 0)
    _pickle(c10 / "test_batch", {b"data": test_rows, b"labels": list(range(6))})
    dm = build_datamodule({"name": "cifar", "root": str(tmp_path), "batch_size": 6})
    dm.setup()
    assert (len(dm._train), len(dm._val), len(dm._test), dm.num_classes) == (15, 5, 6, 10)  # val: 1 per class
    assert sorted(dm._val.tensors[1].tolist()) == [1, 2, 3, 4, 5]
    training_rows = {_rows(4, 32, i)[j].tobytes() for i in range(1, 6) for j in range(4)}
    held = [x.flatten().numpy().tobytes() for ds in (dm._train, dm._val) for x in ds.tensors[0]]
    assert len(held) == len(set(held)) == 20 and set(held) == training_rows  # train + val: the training batches
    images, labels, _ = next(iter(dm.test_dataloader()))  # test: the test batch
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == list(range(6))
    # channel-major rows: the first 1024 values are the red plane
    assert torch.equal(images[0, 0].flatten(), torch.from_numpy(test_rows[0, :1024]))
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    _pickle(c100 / "train", {b"data": _rows(5, 32, 1), b"fine_labels": [99, 0, 1, 2, 3], b"coarse_labels": [0] * 5})
    _pickle(c100 / "test", {b"data": _rows(2, 32, 2), b"fine_labels": [5, 6], b"coarse_labels": [0] * 2})
    dm = build_datamodule({"name": "cifar", "root": str(c100), "classes": 100, "select_on_test": True})
    dm.setup()  # (one image per class: no hold-out possible; the published protocol trains on all)
    assert dm.num_classes == 100 and dm._train.tensors[1].tolist() == [99, 0, 1, 2, 3]


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(MissingDataError, match="cifar-10-batches-py.*lacks data_batch_1.*cs.toronto.edu"):
        build_datamodule({"name": "cifar", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="10 or 100"):
        build_datamodule({"name": "cifar", "root": str(tmp_path), "classes": 20})


@pytest.fixture
def tiny_imagenet64(tmp_path):
    root = tmp_path / "imagenet64"
    root.mkdir()
    for i, name in enumerate(TRAIN_FILES):
        rows = _rows(3, 64, i)
        labels = np.array([1, 500, 1000], dtype=np.int64)
        if i % 2:  # the release ships both formats; mix them
            np.savez(root / f"{name}.npz", data=rows, labels=labels, mean=rows.mean(0))
        else:
            _pickle(root / name, {"data": rows, "labels": labels.tolist(), "mean": rows.mean(0)})
    _pickle(root / "val_data", {"data": _rows(4, 64, 99), "labels": [1, 2, 3, 4]})
    return root


def test_imagenet64_builds_memmap_cache_and_reads_it(tiny_imagenet64):
    dm = build_datamodule(
        {"name": "imagenet64", "root": str(tiny_imagenet64), "batch_size": 4, "num_workers": 0, "val_size": 3}
    )
    dm.setup()
    cache = tiny_imagenet64 / ".gmsop_cache"
    assert (len(dm._train), len(dm._val), len(dm._test), dm.num_classes) == (27, 3, 4, 1000)
    assert sorted(dm._val.labels.tolist()) == [0, 499, 999]  # one per class
    assert sorted(dm._train.rows.tolist() + dm._val.rows.tolist()) == list(range(30))  # a partition
    assert isinstance(dm._train.images, np.memmap)  # read from disk, not loaded
    import pickle as _pickle

    clone = _pickle.loads(_pickle.dumps(dm._train))  # what a spawned DataLoader worker receives
    assert len(_pickle.dumps(dm._train)) < 10_000 and clone._images is None and len(clone) == 27
    assert not list(cache.glob(".*tmp*"))  # nothing half-written is left behind
    train, val = (dm._train, dm._val) if 1 in dm._train.rows else (dm._val, dm._train)
    image, label = train[int(np.flatnonzero(train.rows == 1)[0])]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and label == 499  # labels 1..1000 -> 0..999
    first = _rows(3, 64, 0)[1]  # train_data_batch_1, image 1, channel-major
    assert torch.equal(image[2].flatten(), torch.from_numpy(first[2 * 4096 : 3 * 4096]))
    every = np.concatenate([_rows(3, 64, i) for i in range(10)]).reshape(-1, 3, 4096)
    stats = json.loads((cache / "stats.json").read_text())
    np.testing.assert_allclose(stats["train"]["mean"], every.mean(axis=(0, 2)) / 255.0, rtol=1e-9)
    mean, std = dm.channel_stats()
    assert std == [1.0, 1.0, 1.0]  # mean subtraction only, as in the paper
    images, labels, _ = next(iter(dm.test_dataloader()))  # test: the published val_data
    assert labels.tolist() == [0, 1, 2, 3] and dm.transform(images, training=True).shape == (4, 3, 64, 64)
    # a second data module reuses the cache
    mtime = (cache / "train_images.npy").stat().st_mtime_ns
    dm2 = build_datamodule({"name": "imagenet64", "root": str(tiny_imagenet64), "num_workers": 0, "val_size": 3})
    dm2.setup()
    assert (cache / "train_images.npy").stat().st_mtime_ns == mtime


def test_imagenet64_errors(tmp_path, tiny_imagenet64):
    with pytest.raises(MissingDataError, match="missing train_data_batch_1, .*val_data.*image-net.org"):
        build_datamodule({"name": "imagenet64", "root": str(tmp_path / "none")})
    _pickle(tiny_imagenet64 / "val_data", {"data": _rows(2, 64, 1), "labels": [0, 3]})
    dm = build_datamodule({"name": "imagenet64", "root": str(tiny_imagenet64), "num_workers": 0})
    with pytest.raises(ValueError, match="labels must be 1..1000"):
        dm.setup()
    assert not (tiny_imagenet64 / ".gmsop_cache" / "stats.json").exists()
    assert not list((tiny_imagenet64 / ".gmsop_cache").glob(".*tmp*"))  # a failed conversion leaves nothing half
    _pickle(tiny_imagenet64 / "val_data", {"data": _rows(2, 32, 1), "labels": [1, 3]})
    with pytest.raises(ValueError, match="expected N x 12288"):
        dm.setup()


# Builds the cache of the folder argv[1] with every batch file read slowly (so that a second
# process, or a kill, lands in the middle of the build); prints "ready" once the data is set up.
SLOW_BUILD = """
import sys, time
import gmsop.data.imagenet64 as m
read = m.load_batch
m.load_batch = lambda path: (time.sleep(0.1), read(path))[1]
dm = m.DATA.build({"name": "imagenet64", "root": sys.argv[1], "num_workers": 0, "val_size": 3})
dm.setup()
print("ready", len(dm._train), len(dm._val), flush=True)
"""


def _slow_build(root, log):
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, str(root)], stdout=log, stderr=subprocess.STDOUT, text=True
    )


def test_imagenet64_cache_built_once_by_two_processes_at_once(tiny_imagenet64, tmp_path):
    """Two runs starting on the same data (sweep workers, a job array) build the cache once: the
    second waits for the first and reads what it built, and neither fails or reads it half-written."""
    logs = [open(tmp_path / f"build{i}.log", "w+") for i in range(2)]
    procs = [_slow_build(tiny_imagenet64, log) for log in logs]
    outputs = []
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=120) == 0, log.seek(0) or log.read()
        log.seek(0)
        outputs.append(log.read())
    assert all("ready 27 3" in out for out in outputs), outputs
    assert sum("train: converting" in out for out in outputs) == 1, outputs  # built by one of them
    cache = tiny_imagenet64 / ".gmsop_cache"
    assert not list(cache.glob(".*tmp*"))
    every = np.concatenate([_rows(3, 64, i) for i in range(10)])
    np.testing.assert_array_equal(np.load(cache / "train_images.npy"), every)


def test_imagenet64_cache_build_killed_midway_is_rebuilt(tiny_imagenet64, tmp_path):
    """kill -9 during the build leaves no cache that looks finished; the next run builds it whole."""
    log = open(tmp_path / "killed.log", "w+")
    proc = _slow_build(tiny_imagenet64, log)
    cache = tiny_imagenet64 / ".gmsop_cache"
    deadline = time.monotonic() + 60
    while not list(cache.glob(".train_images*")) and time.monotonic() < deadline:  # converting now
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(cache.glob(".train_images*")), "the build was not under way when it was killed"
    assert not (cache / "stats.json").exists()
    dm = build_datamodule({"name": "imagenet64", "root": str(tiny_imagenet64), "num_workers": 0, "val_size": 3})
    dm.setup()
    assert (len(dm._train), len(dm._val)) == (27, 3)
    assert not list(cache.glob(".*tmp*"))  # the killed build's temporary files are gone
    every = np.concatenate([_rows(3, 64, i) for i in range(10)])
    np.testing.assert_array_equal(np.load(cache / "train_images.npy"), every)


def test_a_read_only_data_folder_asks_for_a_cache_folder(tiny_imagenet64, tmp_path, monkeypatch):
    """The memory-map cache goes beside the data by default; a folder that cannot be written (a
    shared read-only data set) is named with the key that moves the cache, not a PermissionError."""
    from pathlib import Path

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.is_relative_to(tiny_imagenet64):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    dm = build_datamodule({"name": "imagenet64", "root": str(tiny_imagenet64), "batch_size": 4, "num_workers": 0})
    with pytest.raises(MissingDataError, match=r"cannot write the memory-mapped cache .*denied.*data.cache_dir"):
        dm.setup()
    dm = build_datamodule(
        {"name": "imagenet64", "root": str(tiny_imagenet64), "cache_dir": str(tmp_path / "c"), "num_workers": 0}
        | {"val_size": 3}
    )
    dm.setup()
    assert (tmp_path / "c" / "stats.json").is_file()
