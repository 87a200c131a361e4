"""Learning curves: one row per epoch in a run folder's curves.csv.

The file is the record that the run's plot (plots/curves.png) and `gmsop.report` read.
Columns: epoch, lr, then the per-epoch metrics below; a value not (yet) known is empty.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

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


def best_epoch(curves: Mapping[int, Mapping[str, float]], metric: str = "val/top1_err") -> Optional[dict]:
    """The epoch with the lowest `metric` and its validation values ({"epoch": e, "val/...": v}),
    the earliest on a tie; None if no epoch has it."""
    scored = [(v[metric], e) for e, v in curves.items() if metric in v and not math.isnan(v[metric])]
    if not scored:
        return None
    _, epoch = min(scored)
    values = {k: v for k, v in curves[epoch].items() if k in VAL_METRICS and not math.isnan(v)}
    return {"epoch": epoch, **values}
