"""Checkpoint policy: atomic files, last.ckpt after every epoch (and every N steps), the best
of the whole run kept across resumes, and a resumable checkpoint when a run is interrupted.

- `AtomicCheckpointIO`: every checkpoint file (ours and Lightning's SLURM `hpc_ckpt_N.ckpt`)
  is written to a temporary file in the same folder, flushed to disk and renamed over the
  target, so a kill at any moment leaves either the old file or the new one, never half.
- `LastCheckpoint`: `checkpoints/last.ckpt` after every epoch's validation, whether or not
  the monitored metric improved (Lightning's `save_last` rides on the top-k save). Lightning's
  SLURM `hpc_ckpt_N.ckpt` files older than it are then deleted (Lightning keeps one per
  requeue, so a long run requeued often would fill the disk with full checkpoints).
- `BestCheckpoint`: `checkpoints/best.ckpt`; resumed into a new run folder it copies the
  earlier folder's best file and score, so "best" means best of the run, not of the resume.
- `SaveOnInterrupt` (save_on_interrupt.py): a stop signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1),
  to any of the job's processes, writes the current state to last.ckpt (unless the weights are no
  longer finite) so the run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from gmsop.callbacks.lightning_internals import validation_follows
from gmsop.callbacks.save_on_interrupt import SaveOnInterrupt
from gmsop.run_folder.checkpoints import (
    copy_checkpoint_file,
    load_checkpoint_file,
    remove_checkpoint_file,
    save_checkpoint_file,
)
from gmsop.run_folder.layout import BEST, CHECKPOINT_DIR, LAST, SLURM_CHECKPOINTS

MONITOR = "val/top1_err"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but written via a same-folder temporary file and a rename.

    (Lightning's own `_atomic_save` stages the bytes in the system temp folder and moves them,
    which is a non-atomic copy when /tmp is another file system, and leaves the temporary file
    behind after kill -9.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Union[str, Path], storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        save_checkpoint_file(checkpoint, Path(path))

    def load_checkpoint(self, path: Union[str, Path], map_location: Any = None, weights_only: Any = None) -> dict:
        """Every restore Lightning makes (resume, the test stage): verified against its digest, and
        loaded as data only (weights_only=True, whatever Lightning asks for)."""
        return load_checkpoint_file(Path(path), map_location=map_location)

    def remove_checkpoint(self, path: Union[str, Path]) -> None:
        remove_checkpoint_file(Path(path))


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt after every epoch (or every `every_n_train_steps` steps), overwritten in place."""

    def __init__(self, dirpath: Path, every_n_train_steps: Optional[int] = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=LAST,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            every_n_train_steps=every_n_train_steps,
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Step saves skip a batch that a validation follows (an epoch's last, or every N batches with
        trainer.val_check_interval): the checkpoint after the validation stands for it, and Lightning
        2.6 restores a save taken between the two inexactly (a run resumed from one never runs that
        validation, or trains an extra step)."""
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or validation_follows(trainer):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            newest = Path(filepath).stat().st_mtime
            for hpc in Path(self.dirpath).parent.glob(SLURM_CHECKPOINTS):
                if hpc.stat().st_mtime < newest:  # superseded: resume=auto takes the newest
                    remove_checkpoint_file(hpc)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to carry: the file name is fixed (and avoids Lightning's 'dirpath changed' warning)."""


class BestCheckpoint(ModelCheckpoint):
    """checkpoints/best.ckpt by lowest validation top-1 error over the whole run, across resumes."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath, filename=BEST, monitor=MONITOR, mode="min", save_top_k=1, enable_version_counter=False
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:  # resumed in place
            return super().load_state_dict(state_dict)
        earlier, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if not earlier or score is None:
            return
        if not Path(earlier).is_file():
            rank_zero_warn(
                f"the best checkpoint of the resumed run ({earlier}) is gone; best.ckpt will be the best "
                "since this resume"
            )
            return
        target = Path(self.dirpath) / f"{BEST}{self.FILE_EXTENSION}"
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_checkpoint_file(Path(earlier), target)
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}


class RunCheckpoints(NamedTuple):
    best: BestCheckpoint
    interrupt: SaveOnInterrupt
    callbacks: list[L.Callback]  # all of them, best first (Lightning's `ckpt_path='best'` reads the first)


def checkpoint_callbacks(run_dir: Path, every_n_train_steps: Optional[int]) -> RunCheckpoints:
    """The run's checkpoint callbacks (see the module docstring)."""
    folder = run_dir / CHECKPOINT_DIR
    best, interrupt = BestCheckpoint(folder), SaveOnInterrupt(folder / f"{LAST}.ckpt")
    lasts = [LastCheckpoint(folder)] + ([LastCheckpoint(folder, every_n_train_steps)] if every_n_train_steps else [])
    return RunCheckpoints(best, interrupt, [best, *lasts, interrupt])
