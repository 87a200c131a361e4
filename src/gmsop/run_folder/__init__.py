"""The run folder: one training's files, their names and how to read them.

A run folder belongs to one training (`runs/NAME/DATE_TIME_RANDOM`). This package owns its format:
the names of what it holds (`layout`), the lock held by the process writing it (`lock`), reading
its checkpoints (`checkpoints`), its CSV log and learning curves (`log`) and summary.json
(`summary`). Training writes these files; evaluation, export, sweeps and reports read them from
here and import nothing of the training loop.
"""

# ruff: noqa: F401  (the package's interface: these names, from the modules that define them)

from gmsop.run_folder.checkpoints import RECORD_KEY, CheckpointError, read_checkpoint, readable_checkpoint
from gmsop.run_folder.layout import (
    BEST,
    CHECKPOINT_DIR,
    CONTINUED_FILE,
    CSV_FOLDER,
    LAST,
    LAST_CKPT,
    LOCK_FILE,
    MLFLOW_ID_FILE,
    SLURM_CHECKPOINTS,
    SUMMARY,
    TEST_RESULT,
    WANDB_ID_FILE,
    checkpoint_files,
    continuation_of,
    logger_id_in,
    metrics_file,
    newest_checkpoint,
    read_test_result,
    record_continuation,
    run_folder_of,
    write_logger_id,
)
from gmsop.run_folder.lock import RunFolderError, RunLock, is_locked, require_fresh, run_traces
from gmsop.run_folder.log import (
    COLUMNS,
    LR_PREFIX,
    TRAIN_METRICS,
    VAL_METRICS,
    Curves,
    EarlierLog,
    best_epoch,
    curves_from_log,
    earlier_log,
    read_curves,
    read_log,
    rows_up_to,
)
from gmsop.run_folder.summary import read_summary, write_summary
