"""Learning curves: read from the CSV log (a hand-written log, and a real run's against the
logger's own rows), kept across a resume, and the best epoch."""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import asdict

import lightning as L
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from gmsop.callbacks.csv_logger import ContinuedCSVLogger
from gmsop.callbacks.curves_plot import CurvesPlot
from gmsop.config import OptimConfig
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run_folder import best_epoch, earlier_log, metrics_file, read_curves

SGD = asdict(OptimConfig(milestones=[1]))  # the schema's defaults, but milestones=[1]


# Lightning's layout: the learning rate on its own row without an epoch (the next epoch's), step
# rows, then the epoch's validation and training rows
HAND_WRITTEN = """\
epoch,lr-SGD/backbone,lr-SGD/classifier,step,train/loss_epoch,train/loss_step,train/top1_err,val/loss,val/top1_err,val/top5_err
,0.1,0.2,0,,,,,,
0,,,1,,2.5,,,,
0,,,2,,,,1.5,0.5,0.25
0,,,2,2.25,,0.75,,,
,0.01,0.02,2,,,,,,
1,,,3,,1.0,,,,
1,,,4,,,,0.9,0.25,0.125
"""


@pytest.fixture
def hand_written(tmp_path):
    metrics_file(tmp_path).parent.mkdir()
    metrics_file(tmp_path).write_text(HAND_WRITTEN)
    return tmp_path


def test_hand_written_log_gives_one_row_per_epoch(hand_written, tmp_path):
    curves = read_curves(hand_written)
    assert sorted(curves) == [0, 1]
    assert curves[0] == {
        "lr": 0.1,
        "train/loss": 2.25,
        "train/top1_err": 0.75,
        "val/loss": 1.5,
        "val/top1_err": 0.5,
        "val/top5_err": 0.25,
    }
    assert curves[1]["lr"] == 0.01 and curves[1]["val/top5_err"] == 0.125
    assert math.isnan(curves[1]["train/loss"]) and math.isnan(curves[1]["train/top1_err"])  # epoch 1 unfinished
    assert read_curves(tmp_path / "missing") == {}


def _fit(root, max_epochs, ckpt_path=None, resumed_from=None, step=None):
    model = SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, SGD, 10, 1)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        limit_val_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        logger=ContinuedCSVLogger(root, earlier_log(resumed_from, step) if resumed_from else None),
        callbacks=[
            CurvesPlot(root, "test"),
            LearningRateMonitor(logging_interval="epoch"),
            ModelCheckpoint(dirpath=root / "checkpoints", save_last=True),
        ],
    )
    trainer.fit(model, datamodule=build_datamodule({"name": "digits", "batch_size": 16}), ckpt_path=ckpt_path)


def _logged_per_epoch(root, key):
    """The CSV logger's own record of an epoch-level metric: {epoch: value}."""
    with metrics_file(root).open(newline="") as f:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def test_curves_match_the_logged_metrics_and_the_schedule(tmp_path):
    _fit(tmp_path, max_epochs=2)
    curves = read_curves(tmp_path)
    assert sorted(curves) == [0, 1]
    rate = 0.1 * 16 / 256  # optim.lr 0.1 for 256 images, at a batch of 16
    assert [curves[e]["lr"] for e in (0, 1)] == pytest.approx([rate, rate / 10])  # milestone at epoch 1
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
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    _fit(first, max_epochs=2)
    ckpt = first / "checkpoints" / "last.ckpt"
    _fit(second, max_epochs=3, ckpt_path=ckpt, resumed_from=first, step=6)
    before, after = read_curves(first), read_curves(second)
    assert sorted(after) == [0, 1, 2]
    assert after[0] == before[0] and after[1] == before[1]  # the earlier log's rows, as written
    assert all(math.isfinite(v) for v in after[2].values())

    # A checkpoint moved away from its run folder: no earlier log to continue, so the curves
    # start at the resumed epoch (the weights and the schedule are the checkpoint's all the same).
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(ckpt, moved / "last.ckpt")
    _fit(third, max_epochs=3, ckpt_path=moved / "last.ckpt")
    assert sorted(read_curves(third)) == [2] and read_curves(third)[2]["lr"] == pytest.approx(0.01 * 16 / 256)


def test_best_epoch_is_the_lowest_validation_error_earliest_on_ties():
    nan = math.nan
    curves = {
        0: {"lr": 0.1, "val/top1_err": 0.5, "val/top5_err": 0.2, "train/loss": 2.0},
        1: {"val/top1_err": 0.25, "val/top5_err": 0.1, "val/loss": 0.9},
        2: {"val/top1_err": 0.25, "val/top5_err": 0.05},
        3: {"val/top1_err": nan, "train/loss": 0.1},
    }  # not validated
    assert best_epoch(curves) == {"epoch": 1, "val/top1_err": 0.25, "val/top5_err": 0.1, "val/loss": 0.9}
    assert best_epoch({0: {"train/loss": 1.0}}) is None and best_epoch({}) is None


def test_a_continued_log_keeps_the_row_at_exactly_the_checkpoints_step(tmp_path):
    """A validation row sits at the step of the checkpoint saved after it: the resumed run must keep it
    (and drop what came after)."""
    from gmsop.run_folder import rows_up_to

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss_step,val/top1_err\n0,4,1.5,\n0,7,,0.5\n1,8,1.2,\n")
    header, rows = rows_up_to(path, 7)
    assert header == ["epoch", "step", "train/loss_step", "val/top1_err"]
    assert [(r["step"], r["val/top1_err"]) for r in rows] == [("4", ""), ("7", "0.5")]
