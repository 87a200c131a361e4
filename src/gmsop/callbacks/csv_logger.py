"""Lightning's CSV logger, continued across resumes instead of restarted.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts, so a run resumed in its
own folder (SIGTERM and requeue, `trainer.resume=auto`) would lose every row logged before the
interruption. `ContinuedCSVLogger` starts from the rows the resumed checkpoint had reached: those
of the resumed run's `csv/metrics.csv` up to the checkpoint's step (a last line cut by kill -9 is
dropped). Rows after that step were logged by the interrupted process after its checkpoint; the
resumed run logs those steps again, so they are dropped too. A row at the checkpoint's step itself
may have been logged before the checkpoint (validation) or after it (the next epoch's learning
rate): it is kept, and replaced if the resumed run logs the same keys at that step again. So every
row appears once, as in an uninterrupted run (`tests/test_exact_resume.py` compares them).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from gmsop.paths import write_csv_atomic
from gmsop.run_folder.layout import CSV_FOLDER
from gmsop.run_folder.log import EarlierLog


class _ContinuedWriter(ExperimentWriter):
    """Lightning's writer, started from the `earlier` rows up to `step` (none: an empty file)
    instead of deleting the file it finds; rewrites of the file are atomic."""

    def __init__(self, log_dir: str, header: list[str], earlier: list[dict[str, str]], step: Optional[int]) -> None:
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        self._step = step
        self._at_step = [_keys(row) for row in earlier if int(row["step"]) == step]  # may be logged again
        if header:
            self.metrics_keys = sorted(header)  # the order Lightning writes
            self._write(earlier)
        else:
            path.unlink(missing_ok=True)

    def _check_log_dir_exists(self) -> None:
        pass  # the folder is this run's own (run folders are locked and never shared)

    def log_metrics(self, metrics_dict: dict[str, float], step: Optional[int] = None) -> None:
        keys = frozenset(metrics_dict)
        if step == self._step and keys in self._at_step:  # logged again by the resumed run: replace it
            self._at_step.remove(keys)
            self._write([row for row in self._read() if not (int(row["step"]) == step and _keys(row) == keys)])
        super().log_metrics(metrics_dict, step)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._write(self._read(), fieldnames)

    def _read(self) -> list[dict[str, str]]:
        with open(self.metrics_file_path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict[str, str]], fieldnames: Optional[list[str]] = None) -> None:
        header = fieldnames or self.metrics_keys
        write_csv_atomic(Path(self.metrics_file_path), header, ([row.get(k) or "" for k in header] for row in rows))


def _keys(row: dict[str, str]) -> frozenset:
    """The metric names a CSV row holds (its non-empty columns other than step)."""
    return frozenset(k for k, v in row.items() if v not in ("", None) and k != "step")


class ContinuedCSVLogger(CSVLogger):
    """CSVLogger writing RUN/csv/metrics.csv, each row as it is logged; a resumed run first writes
    the `earlier` log it continues (the rows of its run folder up to its checkpoint's step:
    run_folder.earlier_log; the resume plan carries them)."""

    def __init__(self, run_dir: Path, earlier: Optional[EarlierLog] = None) -> None:
        # every row to disk when logged: a row still in memory at kill -9 would be lost for good if a
        # checkpoint already covers its step (LearningRateMonitor's rows are not flushed by Lightning)
        super().__init__(save_dir=str(run_dir), name=CSV_FOLDER, version="", flush_logs_every_n_steps=1)
        self._earlier = earlier

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            header, rows, step = self._earlier or ([], [], None)
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, header, rows, step)
        return self._experiment
