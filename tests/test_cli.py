"""End-to-end runs through the real entry points (python -m gmsop.train / gmsop.eval)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gmsop.models.predictions import Predictions
from tests.wandb_offline import history, logged_keys, records

pytestmark = pytest.mark.slow
QUIET = ("trainer.enable_progress_bar=false",)
# "Far below chance" for 10-class digits (chance error 0.9): at most half of chance. Measured
# after 2 epochs on 2 CPU cores: isqrt 0.07, gmsop 0.09, gmgap 0.13-0.38 (3 seeds/LRs; its
# noisy gate routes near-randomly in training until it learns, while eval routing is
# deterministic, so its early validation error varies from run to run).
FAR_BELOW_CHANCE = 0.45


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _ok(proc) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    )


def test_two_epochs_on_digits_learn_and_log_everything(cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(
        "gmsop.train",
        "experiment=isqrt_digits",
        "trainer.max_epochs=2",
        "data.image_size=16",  # a 4x4 map: learns as well as 32x32 in 2 epochs, in less time
        "logger=[tensorboard,mlflow]",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    )
    _ok(proc)
    summary = _summary(run_dir)
    err = summary["metrics"]["val/top1_err"]
    assert err < FAR_BELOW_CHANCE, f"val top-1 error {err} after 2 epochs (chance is 0.9)"
    assert summary["epochs"] == 2 and summary["feature_dim"] == 2080
    assert summary["feature_map"] == [128, 4, 4]  # (the map is named, and a 64-channel covariance of 16
    assert "data.image_size=36 or more gives a 9 x 9 map and full rank" in proc.stderr  # positions warned of)
    assert summary["metrics"]["train_images_per_s"] > 0  # ThroughputMonitor, over the whole run
    assert summary["input_normalisation"] == "data"  # no pretrained weights: the data set's own mean/std
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # the run config is saved with the run
    assert "val/top1_err" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "checkpoint:" in proc.stdout and "W&B (offline):" in proc.stdout
    # start-up output: the model summary without Lightning's always-zero FLOPs, no advertisement
    out = proc.stdout + proc.stderr
    assert "Total params" in out and "Total Flops" not in out and "FLOPs" not in out
    assert "Tip:" not in out and "LeafSpec" not in out and "ckpt_path=None" not in out and "anonymous" not in out
    assert "flops_per_batch" not in out
    # W&B offline run: exists locally and holds the metrics
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    logged = history(wandb_file)
    assert len(logged["val/top1_err"]) == 2
    assert logged["val/top1_err"][-1] == pytest.approx(err, abs=1e-6)
    assert "train/loss_step" in logged and "train/device/samples_per_sec" in logged
    # TensorBoard (logger=tensorboard), beside W&B and CSV: the same validation errors
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("val/top1_err")] == pytest.approx(logged["val/top1_err"], abs=1e-6)
    # MLflow (logger=...,mlflow): one database for the runs folder, with this run, its settings and errors
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    mlflow_run = client.get_run((run_dir / "mlflow_run_id.txt").read_text().strip())
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.params["head/name"] == "isqrt"
    mlflow_errors = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "val/top1_err")]
    assert mlflow_errors == pytest.approx(logged["val/top1_err"], abs=1e-6)
    # evaluating the best checkpoint reproduces the best validation error
    best_err = min(logged["val/top1_err"])
    best_epoch = logged["val/top1_err"].index(best_err)
    assert (summary["best"]["epoch"], summary["best"]["val/top1_err"]) == (
        best_epoch,
        pytest.approx(best_err, abs=1e-6),
    )
    assert f"(best epoch: {best_epoch})" in proc.stdout
    summarised = {
        r.metric.name: r.metric.summary.min for r in records(wandb_file) if r.WhichOneof("record_type") == "metric"
    }
    assert summarised.get("val/top1_err") is True  # the W&B run summary keeps the minimum, not only the last value
    # the test stage: best.ckpt on the test split, once, in every record
    test = summary["test"]
    assert test["checkpoint"] == str(run_dir / "checkpoints" / "best.ckpt") and test["selected_on"] == "val"
    predictions = Predictions.load(run_dir / "predictions.npz")
    assert len(predictions.index) == test["images"] == 360 and (run_dir / "predictions.npz").stat().st_size < 30_000
    assert test["metrics"]["test/top1_err"] == pytest.approx(predictions.errors()["top1_err"], abs=1e-6)
    assert summary["metrics"]["test/top1_err"] == test["metrics"]["test/top1_err"]
    assert logged["test/top1_err"] == [pytest.approx(test["metrics"]["test/top1_err"], abs=1e-6)]  # W&B
    csv_rows = [r for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r.get("test/top1_err")]
    assert [float(r["test/top1_err"]) for r in csv_rows] == [pytest.approx(test["metrics"]["test/top1_err"])]
    assert "test top-1 error" in proc.stdout and "chosen on val" in proc.stdout
    # gmsop.eval: the test split by default (with predictions); split=val reproduces the best validation error
    best_ckpt = run_dir / "checkpoints" / "best.ckpt"
    proc = cli("gmsop.eval", f"ckpt_path={best_ckpt}", f"hydra.run.dir={tmp_path / 'eval'}")
    _ok(proc)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["test/top1_err"] == pytest.approx(test["metrics"]["test/top1_err"])
    again = Predictions.load(tmp_path / "eval" / "predictions.npz")
    assert np.array_equal(again.index, predictions.index) and np.array_equal(again.top5, predictions.top5)
    proc = cli("gmsop.eval", f"ckpt_path={best_ckpt}", "split=val", f"hydra.run.dir={tmp_path / 'eval_val'}")
    _ok(proc)
    metrics = json.loads((tmp_path / "eval_val" / "metrics.json").read_text())
    assert metrics["val/top1_err"] == pytest.approx(best_err, abs=1e-6)


def test_resume_without_checkpoint_fails_clearly(cli, tmp_path):
    proc = cli("gmsop.train", "experiment=isqrt_digits", f"trainer.resume={tmp_path / 'missing'}", *QUIET)
    assert proc.returncode != 0 and "no checkpoint at" in proc.stderr


def test_config_errors_stop_before_training(cli, tmp_path):
    proc = cli("gmsop.train", "experiment=isqrt_digits", "head.name=nope")
    assert proc.returncode != 0
    assert "unknown head 'nope'; known heads:" in proc.stderr and "Epoch" not in proc.stdout
    proc = cli("gmsop.train", "logger.wandb.log_model=true", "hydra.run.dir=runs/refused")
    assert proc.returncode == 2 and "logger.wandb.log_model=True uploads checkpoints" in proc.stderr
    assert "needs logger.wandb.mode=online" in proc.stderr
    refused = tmp_path / "runs" / "refused"  # Hydra makes the folder and its log; the run writes nothing
    assert {p.name for p in refused.iterdir()} <= {"train.log"}
    proc = cli("gmsop.train", "trainer.max_epoch=1")
    assert proc.returncode != 0 and "max_epoch" in proc.stderr
    proc = cli("gmsop.train", "--help")  # lists experiments, not sweep files or the *_defaults bases
    assert proc.returncode == 0 and "experiment/paper: imagenet64_resnet18_gap" in proc.stdout
    assert "experiment/sweeps" not in proc.stdout and "_defaults" not in proc.stdout.split("== Config ==")[0]


@pytest.mark.parametrize("head", ["gmsop"])  # GM-GAP is the same mixture class with other component heads
def test_mixture_heads_two_epochs_on_digits_with_usage_logs(cli, tmp_path, head):
    run_dir = tmp_path / head
    _ok(
        cli(
            "gmsop.train",
            "experiment=default",
            f"head={head}",
            "trainer.max_epochs=2",
            "data.image_size=16",  # a 4x4 map: 2.3x faster than 32x32, and it learns as well (0.08 error)
            f"hydra.run.dir={run_dir}",
            *QUIET,
        )
    )
    summary = _summary(run_dir)
    err = summary["metrics"]["val/top1_err"]
    assert err < FAR_BELOW_CHANCE, f"{head}: val top-1 error {err} after 2 epochs (chance is 0.9)"
    assert summary["feature_dim"] == {"gmsop": 8256, "gmgap": 512}[head]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {
        "usage/train/c00",
        "usage/val/c15",
        "gate/val/c07",
        "usage/val/active",
        "train/head/cv_step",
        "train/head/balance_loss_step",
        "train/aux_loss_step",
    } <= set(header)
    for split in ("train", "val"):
        assert (run_dir / "plots" / f"component_usage_{split}.png").stat().st_size > 5000
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    keys = logged_keys(wandb_file)
    assert {"usage/val/c00", "train/head/cv_step"} <= keys
    assert any(k.startswith("val/component_usage") for k in keys)  # the bar chart


def test_ddp_on_two_cpu_processes_writes_one_run(cli, tmp_path):
    """Lightning's ddp re-launches the script under Hydra: still one run folder and one W&B run."""
    run_dir = tmp_path / "runs" / "isqrt_digits" / "ddp"
    proc = cli(
        "gmsop.train",
        "experiment=isqrt_digits",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=32",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    )
    _ok(proc)
    assert "global batch 32: 2 processes x 16 images" in proc.stdout  # data.batch_size is the global batch
    assert [p.name for p in (tmp_path / "runs" / "isqrt_digits").iterdir()] == ["ddp"]  # no extra Hydra folders
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1  # non-zero ranks create no W&B run
    summary = _summary(run_dir)
    assert summary["global_step"] == 2 and (run_dir / "train_ddp_process_1.log").is_file()
    # optim.lr (isqrt_digits: 0.01 stated for batch 64) scaled to the global batch 32, in every process
    assert summary["learning_rate"] == {
        "base": 0.01,
        "reference_batch": 64,
        "global_batch": 32,
        "scaling": "linear",
        "rate": pytest.approx(0.005, rel=1e-12),
    }
    line = "learning rate 0.005 = optim.lr 0.01 x (32 / 64)"
    assert line in (run_dir / "train.log").read_text() and line in (run_dir / "train_ddp_process_1.log").read_text()


@pytest.mark.parametrize("debug", ["fast_dev_run", "overfit"])
def test_debug_presets_run_through_the_whole_pipeline(cli, tmp_path, debug):
    """fast_dev_run (Lightning turns checkpoints and loggers off) and overfit_batches (Lightning
    takes over the sampler) both change what a run writes; the run still ends cleanly."""
    run_dir = tmp_path / debug
    # overfit: a rate of 0.05 at digits' batch of 64 (optim.lr is the base rate for 256 images), with BN
    extra = ["trainer.max_epochs=6", "optim.lr=0.2", "model.bn=true"] if debug == "overfit" else []
    proc = cli("gmsop.train", "head=gap", f"debug={debug}", *extra, f"hydra.run.dir={run_dir}", *QUIET)
    _ok(proc)
    summary = _summary(run_dir)
    assert summary["status"] == "finished"
    if debug == "overfit":  # the same 2 batches every epoch: learnt by heart
        assert summary["metrics"]["train/top1_err"] < 0.2, summary["metrics"]


def test_keys_an_entry_point_does_not_use_are_refused_by_name(cli, tmp_path):
    """`+key=value` adds a key no schema declares: it was accepted and ignored (e.g. gmsop.eval
    +head.name=isqrt evaluated the checkpoint's own head)."""
    proc = cli("gmsop.eval", "ckpt_path=missing.ckpt", "+head.name=isqrt")
    assert proc.returncode == 2 and "gmsop.eval does not use head" in proc.stderr, proc.stderr[-2000:]
    proc = cli("gmsop.train", "+trainer.max_epoch=3", "+seeds=2")
    assert proc.returncode == 2 and "training does not use trainer.max_epoch, seeds" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_validation_counts_each_image_once_at_any_process_count(cli, tmp_path):
    """gmsop.eval split=val on 1 and 2 CPU processes (DDP), an odd-sized val set (17): the same metrics.
    A DistributedSampler padded the second process's share with a repeat (18 images counted), and
    val/loss was each process's own mean."""
    from gmsop.run.build import build_run
    from gmsop.run_folder.checkpoints import save_checkpoint_file
    from tests.test_config import compose_train

    _, _, model = build_run(compose_train("head=gap", "data.val_size=17"))
    ckpt = tmp_path / "model.ckpt"
    save_checkpoint_file({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, ckpt)
    metrics = []
    for devices in (1, 2):
        out = tmp_path / f"eval{devices}"
        proc = cli("gmsop.eval", f"ckpt_path={ckpt}", "split=val", "accelerator=cpu", f"devices={devices}",
                   f"hydra.run.dir={out}")  # fmt: skip
        _ok(proc)
        metrics.append(json.loads((out / "metrics.json").read_text()))
    assert metrics[0]["val/top1_err"] * 17 == pytest.approx(round(metrics[0]["val/top1_err"] * 17), abs=1e-4)
    for key in ("val/top1_err", "val/top5_err", "val/loss"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-6), key
