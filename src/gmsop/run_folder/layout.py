"""What a run folder holds, by name, and where to find it.

RUN/checkpoints/last.ckpt   the training state after the newest epoch (or N steps, or a stop signal)
RUN/checkpoints/best.ckpt   the epoch with the lowest val/top1_err, over the whole run
RUN/hpc_ckpt_N.ckpt         Lightning's SLURM requeue save (only the newest is kept)
RUN/csv/metrics.csv         every logged row, continued across resumes
RUN/summary.json            what ran, how it ended, its metrics
RUN/test.json, predictions.npz   the test stage's result and per-image predictions
RUN/wandb_run_id.txt, mlflow_run_id.txt   the logger runs this folder's training writes to
RUN/continued_in.json       another folder continued this run (its folder and W&B id)
RUN/.run.lock               held by the process writing the folder
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from gmsop.paths import write_text_atomic

CHECKPOINT_DIR = "checkpoints"
SLURM_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's SIGUSR1 saves under SLURM, at the run folder's top
LAST = "last"
BEST = "best"
LAST_CKPT = Path(CHECKPOINT_DIR) / f"{LAST}.ckpt"
LOCK_FILE = ".run.lock"
SUMMARY = "summary.json"
WANDB_ID_FILE = "wandb_run_id.txt"
MLFLOW_ID_FILE = "mlflow_run_id.txt"
CONTINUED_FILE = "continued_in.json"  # in a run folder another folder continued: {run_dir, wandb_id}
CSV_FOLDER = "csv"
TEST_RESULT = "test.json"
# What a training leaves in its folder from its first seconds (besides checkpoints): any of them
# means the folder holds a run, even one killed before its first checkpoint
CSV_LOG = f"{CSV_FOLDER}/{ExperimentWriter.NAME_METRICS_FILE}"  # RUN/csv/metrics.csv
RUN_TRACES = (SUMMARY, WANDB_ID_FILE, MLFLOW_ID_FILE, CSV_LOG, ".hydra/config.yaml")


def checkpoint_files(folder: Path, resumable_only: bool = False) -> list[Path]:
    """The checkpoints a run folder holds: checkpoints/*.ckpt (last, best) and Lightning's SLURM
    hpc_ckpt_N.ckpt; with resumable_only, last.ckpt and hpc_ckpt_N.ckpt (best.ckpt is a model to
    evaluate, not where training stands)."""
    folder = Path(folder)
    ours = [folder / LAST_CKPT] if resumable_only else (folder / CHECKPOINT_DIR).glob("*.ckpt")
    return [p for p in (*ours, *folder.glob(SLURM_CHECKPOINTS)) if p.is_file()]


def run_folder_of(ckpt: Path) -> Path:
    """The run folder a checkpoint was saved in (RUN/checkpoints/NAME.ckpt, or RUN/hpc_ckpt_N.ckpt)."""
    return ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else ckpt.parent


def newest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The most recent of a run folder's last.ckpt and Lightning's SLURM hpc_ckpt_N.ckpt."""
    candidates = checkpoint_files(run_dir, resumable_only=True)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def logger_id_in(run_dir: Path, id_file: str) -> Optional[str]:
    """The logger run id a run folder keeps in id_file (WANDB_ID_FILE, MLFLOW_ID_FILE), or None."""
    path = run_dir / id_file
    return (path.read_text().strip() or None) if path.is_file() else None


def write_logger_id(run_dir: Path, id_file: str, run_id: str) -> None:
    """Keep the logger run id this folder's training writes to (read back by logger_id_in)."""
    write_text_atomic(run_dir / id_file, run_id)


def continuation_of(run_dir: Path) -> Optional[dict]:
    """Where a run folder's training was continued into another folder ({run_dir, wandb_id}), or None."""
    try:
        return json.loads((run_dir / CONTINUED_FILE).read_text())
    except (OSError, ValueError):
        return None


def record_continuation(source: Path, run_dir: Path, wandb_id: str) -> None:
    """Note in `source` that its training goes on in `run_dir` as W&B run `wandb_id` (continuation_of)."""
    write_text_atomic(source / CONTINUED_FILE, json.dumps({"run_dir": str(run_dir), "wandb_id": wandb_id}))


def metrics_file(run_dir: Path) -> Path:
    """Where a run folder's CSV log is: RUN/csv/metrics.csv."""
    return Path(run_dir) / CSV_LOG


def read_test_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """The test stage's record in a run folder, or None if it has not finished there."""
    path = Path(run_dir) / TEST_RESULT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # (written atomically: only a hand-edited file gets here)
        return None
