"""The test stage through the real CLI: best.ckpt is chosen on val, tested once after fit, and a
run stopped during its test stage tests when resumed, once."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import torch

from gmsop.models.predictions import Predictions
from gmsop.run.evaluate import evaluate
from tests.conftest import REPO, run_cli, start_cli

pytestmark = pytest.mark.slow
DIGITS = (
    "experiment=isqrt_digits",
    "data.image_size=16",
    "logger.wandb.enabled=false",
    "trainer.enable_progress_bar=false",
)
HELPERS = {"PYTHONPATH": str(REPO)}  # tests.pace


@pytest.fixture
def cli(tmp_path):
    """The real CLI, with runs under tmp_path/runs and this repository's test callbacks importable."""
    return lambda module, *args: run_cli(module, *args, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path, env=HELPERS)


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_best_checkpoint_is_chosen_on_val_and_tested_once(cli, tmp_path):
    """val/top1_err is scripted so that epoch 1 is best on val whatever the test split says: best.ckpt
    is epoch 1's, and the test stage evaluates exactly it."""
    run_dir = tmp_path / "run"
    proc = cli(
        "gmsop.train",
        *DIGITS,
        "trainer.max_epochs=3",
        "+callbacks.script._target_=tests.pace.ScriptedValidation",
        "+callbacks.script.errors=[0.9,0.05,0.9]",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = run_dir / "checkpoints" / "best.ckpt"
    assert torch.load(best, weights_only=False)["epoch"] == 1
    test = _summary(run_dir)["test"]
    assert test["checkpoint"] == str(best) and test["selected_on"] == "val"
    on_test, _ = evaluate(best, {}, accelerator="cpu")
    assert on_test["test/top1_err"] == pytest.approx(test["metrics"]["test/top1_err"], abs=1e-6)
    last, _ = evaluate(run_dir / "checkpoints" / "last.ckpt", {}, accelerator="cpu")
    assert last["test/top1_err"] != pytest.approx(on_test["test/top1_err"], abs=1e-9)  # another model was tested


def test_published_protocol_is_marked_selected_on_test(cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("gmsop.train", *DIGITS, "trainer.max_epochs=1", "data.select_on_test=true", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(run_dir)
    assert summary["selected_on"] == "test" and summary["test"]["selected_on"] == "test"
    assert "chosen on test: data.select_on_test" in proc.stdout


def _output(proc) -> str:
    proc.log.seek(0)
    return proc.log.read()


def test_stopped_in_the_test_stage_resumes_into_it_once(cli, tmp_path):
    run_dir = tmp_path / "run"
    args = [*DIGITS, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    slow_test = [
        "+callbacks.pace._target_=tests.pace.Pace",
        "+callbacks.pace.seconds=0",
        "+callbacks.pace.test_seconds=1",
    ]
    proc = start_cli("gmsop.train", *args, *slow_test, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path, env=HELPERS)
    deadline = time.monotonic() + 240
    while "Restoring states from the checkpoint path" not in _output(proc):  # the test stage has begun
        assert proc.poll() is None and time.monotonic() < deadline, _output(proc)
        time.sleep(0.2)
    time.sleep(1.5)  # a test batch or two
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, _output(proc)
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted" and summary["test"] is None and summary["interrupted_by"] == "SIGTERM"
    assert not (run_dir / "test.json").exists() and not (run_dir / "predictions.npz").exists()
    resumed = cli("gmsop.train", *args, "trainer.resume=auto")  # in place: training is done, the test stage runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _summary(run_dir)
    assert summary["status"] == "finished" and summary["test"]["images"] == 360
    first = Predictions.load(run_dir / "predictions.npz")
    assert summary["test"]["metrics"]["test/top1_err"] == pytest.approx(first.errors()["top1_err"], abs=1e-6)
    stamp = (run_dir / "test.json").stat().st_mtime_ns
    once_more = cli("gmsop.train", *args, "trainer.resume=auto")
    assert once_more.returncode == 0, once_more.stderr[-3000:]
    assert "test stage already ran" in once_more.stdout and (run_dir / "test.json").stat().st_mtime_ns == stamp
    assert np.array_equal(Predictions.load(run_dir / "predictions.npz").top5, first.top5)
    assert _summary(run_dir)["test"]["metrics"] == summary["test"]["metrics"]
