"""The benchmark suite runs end to end and writes every ratio it promises (tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_suite_writes_ratios(tmp_path):
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "suite.py"),
            "--only",
            "a,b,c,f",
            "--batch",
            "2",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    keys = set(result["ratios"])
    for shape in ("256x14x14", "256x8x8", "128x16x16"):
        assert f"(a) isqrt closed_form / autograd @ {shape}" in keys
        assert f"(b) isqrt / mpncov @ {shape}" in keys
        assert f"(b) isqrt / straightforward isqrt @ {shape}" in keys
    assert "(c) gmsop-16-8 sparse / dense" in keys
    assert {
        "(f) loader / model img/s, imagenet64 memmap",
        "(f) loader / model img/s, image folder (JPEG 80px -> 64px)",
    } <= keys
    assert all(v > 0 for v in result["ratios"].values())
    assert all(r["saved_mb"] > 0 for r in result["rows"] if r["section"] in "abc")


def test_suite_rejects_unknown_section():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "suite.py"), "--only", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "sections among a,b,c,d" in proc.stderr


def test_straightforward_baseline_computes_what_the_isqrt_head_computes():
    """(b) times the head against a plain implementation of the same math: it must be the same
    function (float64, every side the head can choose)."""
    from gmsop.heads import build_head

    sys.path.insert(0, str(REPO / "benchmarks"))
    from reference_isqrt import StraightforwardISqrt

    x = torch.randn(3, 16, 5, 4, dtype=torch.float64)
    expected = StraightforwardISqrt(iterations=5)(x).features
    for side in ("channel", "position", "auto"):
        head = build_head({"name": "isqrt", "side": side, "iterations": 5}, 16).double()
        torch.testing.assert_close(head(x).features, expected, rtol=1e-10, atol=1e-12)
