"""Entry points other than training, stopped by a signal to their process group (as a terminal's
Ctrl-C or a scheduler sends it): exit 128 + the signal's number, say so, write no result and leave
no temporary files. (Training's own stops: tests/test_faults.py.)"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from gmsop.run.build import build_run
from gmsop.run_folder.checkpoints import save_checkpoint_file
from tests.conftest import start_cli
from tests.test_config import compose_train

pytestmark = pytest.mark.slow


def _stop_when_started(proc, signum: int, started: str = "GPU available", timeout: float = 120) -> str:
    """Send `signum` to the process group once `started` is in its output; wait; its output."""
    end = time.monotonic() + timeout
    while True:
        proc.log.seek(0)
        if started in proc.log.read():
            break
        assert proc.poll() is None, f"ended (exit {proc.returncode}) before it started:\n{proc.log.read()[-3000:]}"
        assert time.monotonic() < end, "never started"
        time.sleep(0.05)
    time.sleep(0.5)  # (inside the work)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=120)
    proc.log.seek(0)
    return proc.log.read()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A digits model whose evaluation takes a while (one image per batch)."""
    cfg = compose_train("head=gap", "data.eval_batch_size=1")
    _, _, model = build_run(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_checkpoint_file({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_eval_stopped_by_a_signal_exits_with_its_code_and_writes_nothing(tmp_path, checkpoint, signum):
    out = tmp_path / "eval"
    proc = start_cli("gmsop.eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={out}", cwd=tmp_path, session=True)
    output = _stop_when_started(proc, signum)
    assert proc.returncode == 128 + signum, output[-3000:]
    assert f"stopped by {signal.Signals(signum).name}: the evaluation did not finish" in output
    assert not (out / "metrics.json").exists() and not (out / "predictions.npz").exists()
    assert not list(tmp_path.rglob(".*.tmp-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_lr_find_stopped_by_a_signal_exits_with_its_code_and_leaves_no_checkpoint(tmp_path, signum):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "lrf"
    proc = start_cli(
        "gmsop.lr_find", "head=gap", "data.batch_size=8", "data.image_size=64", "--steps", "500", "--out", str(out),
        cwd=tmp_path, env={"TMPDIR": str(scratch)}, session=True,
    )  # fmt: skip
    output = _stop_when_started(proc, signum, started="GPU available")
    assert proc.returncode == 128 + signum, output[-3000:]
    assert f"stopped by {signal.Signals(signum).name}: the learning-rate finder did not finish" in output
    assert not out.exists() or not any(out.iterdir())
    assert not list(scratch.iterdir()) and not list(tmp_path.rglob("*.ckpt"))


def test_a_checkpoint_for_eval_is_what_the_fixture_says(checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt["hyper_parameters"]["data"]["eval_batch_size"] == 1
