"""Reading a run's CSV log (csv/metrics.csv): its rows, and its learning curves.

Lightning's CSV logger writes one row per logged step; the per-epoch values are its epoch-level
rows (train/loss_epoch, train/top1_err, val/...), and the learning rate is the row
`LearningRateMonitor` writes as each epoch starts (it has no epoch column: it belongs to the
next epoch logged). The log is continued across resumes (`gmsop.callbacks.csv_logger`), so the curves of
a resumed run start at epoch 0. The run's plot (plots/curves.png), summary.json's best epoch,
a continued sweep trial's earlier scores and `gmsop.report` all read them from here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple, Optional

from gmsop.run_folder.layout import metrics_file

TRAIN_METRICS = ("train/loss", "train/top1_err")
VAL_METRICS = ("val/loss", "val/top1_err", "val/top5_err")
COLUMNS = ("lr", *TRAIN_METRICS, *VAL_METRICS)
LOGGED_AS = {"train/loss": "train/loss_epoch"}  # column -> its name in the log (the loss is logged per step too)
LR_PREFIX = "lr-"  # LearningRateMonitor's columns, one per parameter group; the first (backbone) is plotted

Curves = dict[int, dict[str, float]]  # epoch -> column -> value (NaN where not logged)


def read_log(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run folder's CSV log, as written ([] if it has none)."""
    path = metrics_file(run_dir)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class EarlierLog(NamedTuple):
    """The CSV log a resumed run continues: the header and rows of its run folder up to `step`."""

    header: list[str]
    rows: list[dict[str, str]]
    step: int


def earlier_log(run_dir: Path, step: int) -> EarlierLog:
    """What a run resumed from `run_dir`'s checkpoint at `step` keeps of that folder's CSV log."""
    return EarlierLog(*rows_up_to(metrics_file(run_dir), step), step)


def rows_up_to(path: Path, step: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the complete rows of a Lightning metrics.csv whose step is <= `step`."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            try:
                complete = None not in row.values() and None not in row and int(row["step"]) <= step
            except (KeyError, ValueError):
                complete = False
            if complete:
                rows.append(row)
    return header, rows


def read_curves(run_dir: Path) -> Curves:
    """{epoch: {column: value}} from RUN/csv/metrics.csv; {} if the run has no CSV log."""
    return curves_from_log(read_log(run_dir))


def curves_from_log(rows: Iterable[Mapping[str, str]]) -> Curves:
    """{epoch: {column: value}} from the rows of a CSV log, for the epochs with any of the columns
    logged."""
    curves: Curves = {}
    lr: Optional[float] = None  # logged at an epoch's start, before any row of that epoch
    for row in rows:
        lrs = [v for k, v in row.items() if k and k.startswith(LR_PREFIX) and v]
        if lrs and not row.get("epoch"):
            lr = float(lrs[0])
        if not row.get("epoch"):
            continue
        epoch = curves.setdefault(int(float(row["epoch"])), dict.fromkeys(COLUMNS, math.nan))
        if lr is not None:
            epoch["lr"], lr = lr, None
        for column in COLUMNS[1:]:
            if row.get(LOGGED_AS.get(column, column)):
                epoch[column] = float(row[LOGGED_AS.get(column, column)])
    return {e: row for e, row in curves.items() if not all(math.isnan(v) for v in row.values())}


def best_epoch(curves: Mapping[int, Mapping[str, float]], metric: str = "val/top1_err") -> Optional[dict]:
    """The epoch with the lowest `metric` and its validation values ({"epoch": e, "val/...": v}),
    the earliest on a tie; None if no epoch has it."""
    scored = [(v[metric], e) for e, v in curves.items() if metric in v and not math.isnan(v[metric])]
    if not scored:
        return None
    _, epoch = min(scored)
    values = {k: v for k, v in curves[epoch].items() if k in VAL_METRICS and not math.isnan(v)}
    return {"epoch": epoch, **values}
