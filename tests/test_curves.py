"""Learning curves: curves.csv round trip, values against the CSV logger's record, resume keeps history."""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import asdict

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from gmsop.config import OptimConfig
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run.callbacks import LearningCurves
from gmsop.run.curves import COLUMNS, read_curves, write_curves

SGD = asdict(OptimConfig(milestones=[1]))  # the schema's defaults, but milestones=[1]


def test_curves_file_round_trip_with_missing_values(tmp_path):
    curves = {1: {"lr": 0.01, "val/top1_err": 0.25}, 0: {"lr": 0.1, "train/loss": 2.5, "val/top1_err": 0.5}}
    path = write_curves(tmp_path, curves)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [row.split(",")[0] for row in path.read_text().splitlines()[1:]] == ["0", "1"]  # sorted by epoch
    back = read_curves(tmp_path)
    assert back[0]["train/loss"] == 2.5 and back[1]["val/top1_err"] == 0.25
    assert math.isnan(back[1]["train/loss"]) and math.isnan(back[0]["val/top5_err"])
    assert [p.name for p in tmp_path.iterdir()] == ["curves.csv"]  # no temporary file left
    assert read_curves(tmp_path / "missing") == {}


def _fit(root, max_epochs, ckpt_path=None, earlier_run=None):
    model = SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, SGD, 10, 1)
    curves = LearningCurves(root, title="test", earlier_run=earlier_run)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        limit_val_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        logger=CSVLogger(save_dir=root, name="csv", version=""),
        callbacks=[curves, ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)],
    )
    trainer.fit(model, datamodule=build_datamodule({"name": "digits", "batch_size": 16}), ckpt_path=ckpt_path)
    return curves


def _logged_per_epoch(root, key):
    """The CSV logger's own record of an epoch-level metric: {epoch: value}."""
    with (root / "csv" / "metrics.csv").open(newline="") as f:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def test_curves_match_the_logged_metrics_and_the_schedule(tmp_path):
    _fit(tmp_path, max_epochs=2)
    curves = read_curves(tmp_path)
    assert sorted(curves) == [0, 1]
    assert [curves[e]["lr"] for e in (0, 1)] == pytest.approx([0.1, 0.01])  # milestone at epoch 1
    for column, logged_key in [
        ("train/loss", "train/loss_epoch"),
        ("train/top1_err", "train/top1_err"),
        ("val/loss", "val/loss"),
        ("val/top1_err", "val/top1_err"),
        ("val/top5_err", "val/top5_err"),
    ]:
        logged = _logged_per_epoch(tmp_path, logged_key)
        assert {e: curves[e][column] for e in (0, 1)} == pytest.approx(logged, rel=1e-6), column
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 5000


def test_resumed_run_keeps_the_earlier_epochs(tmp_path):
    first, second, moved = tmp_path / "first", tmp_path / "second", tmp_path / "moved"
    _fit(first, max_epochs=2)
    ckpt = first / "checkpoints" / "last.ckpt"
    _fit(second, max_epochs=3, ckpt_path=ckpt, earlier_run=first)
    before, after = read_curves(first), read_curves(second)
    assert sorted(after) == [0, 1, 2]
    assert after[0] == pytest.approx(before[0])  # restored from the checkpoint, not re-measured
    # Epoch 1's training values were final only after its checkpoint was written: taken from first/curves.csv.
    assert after[1] == pytest.approx(before[1])
    assert all(math.isfinite(after[2][c]) for c in COLUMNS[1:])

    # A checkpoint without its run folder's curves.csv: the history still starts at epoch 0,
    # but the epoch resumed from has no training values.
    moved.mkdir()
    shutil.copy(ckpt, moved / "last.ckpt")
    _fit(tmp_path / "third", max_epochs=3, ckpt_path=moved / "last.ckpt", earlier_run=tmp_path)
    third = read_curves(tmp_path / "third")
    assert third[0] == pytest.approx(before[0]) and third[1]["val/top1_err"] == pytest.approx(before[1]["val/top1_err"])
    assert math.isnan(third[1]["train/loss"])


def test_best_epoch_is_the_lowest_validation_error_earliest_on_ties():
    from gmsop.run.curves import best_epoch

    nan = math.nan
    curves = {
        0: {"lr": 0.1, "val/top1_err": 0.5, "val/top5_err": 0.2, "train/loss": 2.0},
        1: {"val/top1_err": 0.25, "val/top5_err": 0.1, "val/loss": 0.9},
        2: {"val/top1_err": 0.25, "val/top5_err": 0.05},
        3: {"val/top1_err": nan, "train/loss": 0.1},
    }  # not validated
    assert best_epoch(curves) == {"epoch": 1, "val/top1_err": 0.25, "val/top5_err": 0.1, "val/loss": 0.9}
    assert best_epoch({0: {"train/loss": 1.0}}) is None and best_epoch({}) is None
