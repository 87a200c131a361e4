"""The benchmark suite runs end to end and writes every ratio it promises (tiny sizes)."""

from __future__ import annotations

import json
import re
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
    assert {"(c) gmsop-16-8 sparse / dense", "(c) gmsop-16-8 static / sparse"} <= keys
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


def test_paper_rows_section_trains_rows_through_the_data_path_and_tabulates_them(tmp_path):
    """(g) in CI size: GM-SOP-16-8's Table-1 row, the recipe and static dispatch, 1 step after 1
    warm-up at batch 2; every number the table shows is in the results file, and the table is made from it."""
    out = tmp_path / "suite.json"
    rows = "imagenet64_resnet18_gmsop_16_8"
    cmd = [sys.executable, str(REPO / "benchmarks" / "suite.py"), "--only", "g", "--rows", rows]
    cmd += ["--paper-batch", "2", "--steps", "1", "--warmup", "1", "--workers", "0", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [r for r in json.loads(out.read_text())["rows"] if r["section"] == "g"]
    assert [(r["row"], r["variant"]) for r in found] == [
        ("imagenet64_resnet18_gmsop_16_8", "recipe"),
        ("imagenet64_resnet18_gmsop_16_8", "static"),
    ]
    for r in found:
        assert r["batch"] == 2 and r["images_per_s"] > 0 and r["gflop_per_image"] > 0, r
        assert r["tflops"] == pytest.approx(r["gflop_per_image"] * r["images_per_s"] / 1e3)
        assert r["recipe_hours"] == pytest.approx(r["epochs"] * 1_281_167 / r["images_per_s"] / 3600)
    assert found[1]["overrides"] == ["head.dispatch=static"]
    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_rows import markdown

    table = markdown(found)
    printed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "paper_rows.py"), str(out)], capture_output=True, text=True
    )
    assert printed.stdout == table
    assert f"| imagenet64_resnet18_gmsop_16_8 | static | 2 | {found[1]['images_per_s']:.1f} |" in table


def test_paper_rows_variants_add_up_and_unknown_ones_are_refused():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_rows import paper_rows, variant_overrides

    order = ["recipe", "bf16", "static", "compile", "graphs"]
    assert variant_overrides(order, "static") == ["trainer.precision=bf16-mixed", "head.dispatch=static"]
    assert variant_overrides(order, "graphs") == [
        "trainer.precision=bf16-mixed",
        "head.dispatch=static",
        "model.compile=reduce-overhead",  # replaces compile=true
    ]
    with pytest.raises(ValueError, match="unknown variant.*'fast'.*allowed: recipe"):
        paper_rows(torch.device("cpu"), ["recipe", "fast"])
    # variants that change nothing for a row (static dispatch without a mixture; CUDA graphs on a
    # CPU) are skipped, not measured as copies of the one before
    assert (
        paper_rows(torch.device("cpu"), ["static"], rows=["imagenet64_resnet18_gap"], steps=1, warmup=0, batch=1) == []
    )
    assert paper_rows(torch.device("cpu"), ["graphs"], rows=["imagenet64_resnet18_gmsop_16_8"], steps=1, batch=1) == []


def test_readme_paper_rows_tables_are_made_from_their_results_files():
    """Every table the README marks `<!-- paper rows: FILE -->` is paper_rows.markdown of FILE."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_rows import markdown

    readme = (REPO / "README.md").read_text()
    marked = re.findall(r"<!-- paper rows: (\S+) -->\n(.*?)<!-- end paper rows -->", readme, re.S)
    assert marked, "the README shows no paper-rows table"
    for file, table in marked:
        rows = [r for r in json.loads((REPO / file).read_text())["rows"] if r.get("section") == "g"]
        assert table.strip() == markdown(rows).strip(), f"the README's table differs from {file}"
