"""Learning curves: one row per epoch in a run folder's curves.csv.

The file is the record that the run's plot (plots/curves.png) and `gmsop.report` read.
Columns: epoch, lr, then the per-epoch metrics below; a value not (yet) known is empty.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping

from gmsop.paths import write_csv_atomic

CURVES_FILE = "curves.csv"
TRAIN_METRICS = ("train/loss", "train/top1_err")
VAL_METRICS = ("val/loss", "val/top1_err", "val/top5_err")
COLUMNS = ("epoch", "lr", *TRAIN_METRICS, *VAL_METRICS)

Curves = dict[int, dict[str, float]]  # epoch -> column -> value


def write_curves(run_dir: Path, curves: Mapping[int, Mapping[str, float]]) -> Path:
    """Write curves.csv (rows sorted by epoch) atomically; return its path."""
    path = run_dir / CURVES_FILE
    rows = ([epoch, *(curves[epoch].get(c, "") for c in COLUMNS[1:])] for epoch in sorted(curves))
    write_csv_atomic(path, COLUMNS, rows)
    return path


def read_curves(run_dir: Path) -> Curves:
    """curves.csv of a run folder -> {epoch: {column: value}} (missing values are NaN); {} if absent."""
    path = run_dir / CURVES_FILE
    if not path.is_file():
        return {}
    curves: Curves = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            curves[int(row["epoch"])] = {k: float(v) if v else math.nan for k, v in row.items() if k in COLUMNS[1:]}
    return curves
