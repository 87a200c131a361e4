"""python -m gmsop.lr_find: Lightning's learning-rate finder on a composed training config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_lr_find_writes_the_curve_and_suggests_a_learning_rate(tmp_path):
    out = tmp_path / "lrf"
    cmd = [sys.executable, "-m", "gmsop.lr_find", "head=gap", "data.batch_size=32", "--steps", "12", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "lr_find.json").read_text())
    lrs = result["lrs"]
    assert len(lrs) == 12 and lrs[0] == pytest.approx(1e-5) and all(a < b for a, b in zip(lrs, lrs[1:]))
    assert (out / "lr_find.png").stat().st_size > 0
    assert ("suggested learning rate" in proc.stdout) == (result["suggestion"] is not None)
    # the finder sweeps the rate trained at; optim.lr is the base rate for 256 images, linear scaling
    assert (result["global_batch"], result["lr_reference_batch"], result["lr_scaling"]) == (32, 256, "linear")
    if result["suggestion"] is not None:
        assert result["base_lr"] == pytest.approx(result["suggestion"] * 256 / 32, rel=1e-12)
        assert f"optim.lr={result['base_lr']:.3g}" in proc.stdout
    assert not list(tmp_path.glob("runs")) and not list(tmp_path.rglob("*.ckpt"))  # nothing of a run is written


def test_lr_find_refuses_a_range_or_step_count_it_cannot_use(tmp_path):
    cmd = [sys.executable, "-m", "gmsop.lr_find", "--min-lr", "1", "--max-lr", "0.1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "need 0 < --min-lr < --max-lr, got 1.0 and 0.1" in proc.stderr


def test_suggestion_is_the_steepest_fall_per_decade_before_the_minimum():
    from gmsop.run.lr_find import steepest_descent

    lrs = [10.0**e for e in range(-6, 1)]  # 1e-6 .. 1
    losses = [
        1.0,
        2.3,
        2.2,
        1.4,
        1.2,
        1.1,
        9.0,
    ]  # smoothing artefact at 1e-6, steepest fall 1e-4 -> 1e-3, divergence at 1
    # central slopes per decade from 1e-5 to the minimum (1e-1): -0.1, -0.45, -0.5, -0.15, -0.1
    assert steepest_descent(lrs, losses, skip_begin=1) == 1e-3
    assert steepest_descent(lrs, [2.3, 2.3, 2.2, 9.0, 9.0, 9.0, 9.0], skip_begin=1) is None  # no descent to speak of
    assert steepest_descent(lrs, [float("nan")] * 7, skip_begin=1) is None
