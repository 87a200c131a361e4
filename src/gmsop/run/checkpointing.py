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
- `SaveOnInterrupt`: SIGTERM (cluster preemption) or Ctrl-C writes the current state to
  last.ckpt (unless the weights are no longer finite) so the run resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any, NamedTuple, Optional

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from gmsop.paths import replace_atomically

CHECKPOINT_DIR = "checkpoints"
SLURM_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's SIGUSR1 saves under SLURM, at the run folder's top
LAST = "last"
BEST = "best"
MONITOR = "val/top1_err"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but written via a same-folder temporary file and a rename.

    (Lightning's own `_atomic_save` stages the bytes in the system temp folder and moves them,
    which is a non-atomic copy when /tmp is another file system, and leaves the temporary file
    behind after kill -9.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: torch.save(checkpoint, tmp))


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
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch or loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            newest = Path(filepath).stat().st_mtime
            for hpc in Path(self.dirpath).parent.glob(SLURM_CHECKPOINTS):
                if hpc.stat().st_mtime < newest:  # superseded: resume=auto takes the newest
                    hpc.unlink(missing_ok=True)

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
        replace_atomically(target, lambda tmp: shutil.copyfile(earlier, tmp))
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}


class SaveOnInterrupt(L.Callback):
    """On SIGTERM / SIGUSR1 / Ctrl-C, save the current training state to last.ckpt so nothing
    since the last epoch is lost; never on other errors, nor weights that are no longer finite.

    Lightning turns SIGTERM into a SIGTERMException at the next batch boundary (all DDP ranks
    together), where the saved state resumes exactly. Outside SLURM, SIGUSR1 is treated as SIGTERM
    (under SLURM Lightning's own SIGUSR1 handler, checkpoint + requeue, stays). The first Ctrl-C
    is treated the same way (a KeyboardInterrupt could land between an optimizer step and its
    bookkeeping); a second one stops at once without saving. `reason` names the interruption.

    A signal during validation waits until validation ends (Lightning would stop in the middle,
    and a resumed run would then never validate that epoch), and one during a gradient
    accumulation until its optimizer step.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.reason: Optional[str] = None
        self._requested: Optional[str] = None
        self._previous: dict[int, Any] = {}
        self._held = False  # a signal taken off Lightning's flag until a point where the state resumes exactly

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not SLURMEnvironment.detect() and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._usr1_as_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._ctrl_c_as_sigterm)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """With several processes, SIGTERM only sets Lightning's flag. Lightning 2.6's own handler
        also broadcasts from inside the signal handler, a collective that the ranks run a different
        number of times (rank 0 forwards the signal to the others, which may have their own, as
        under SLURM), so the job hangs (Lightning issue #20806; seen here with two CPU processes).
        Lightning broadcasts rank 0's flag at every batch start anyway, so all ranks stop at the
        same batch. (Registered here: Lightning sets its handlers after on_fit_start.)"""
        if trainer.world_size > 1:
            self._previous.setdefault(signal.SIGTERM, signal.getsignal(signal.SIGTERM))
            signal.signal(signal.SIGTERM, lambda signum, frame: self._flag_sigterm(trainer, signum))

    @staticmethod
    def _flag_sigterm(trainer: L.Trainer, signum: int) -> None:
        connector = trainer._signal_connector  # Lightning 2.6 keeps the flag there
        launcher = trainer.strategy.launcher
        if not connector.received_sigterm and launcher is not None:
            launcher.kill(signum)  # the processes this one started, as Lightning does
        connector.received_sigterm = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Act on a signal (one held since a validation inside the epoch, too) only after a batch that
        stepped: in the middle of a gradient accumulation (trainer.accumulate_grad_batches) the
        gradients summed so far are in no checkpoint, and a run resumed from a save there would step
        without them."""
        connector = trainer._signal_connector  # Lightning 2.6 keeps the flag there
        if connector.received_sigterm or self._held:
            stepped = not trainer.fit_loop.epoch_loop._should_accumulate()
            connector.received_sigterm, self._held = stepped, not stepped

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """Hold a signal that came during validation (Lightning checks for one after this hook)."""
        connector = trainer._signal_connector  # Lightning 2.6 keeps the flag there
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and connector.received_sigterm:
            connector.received_sigterm, self._held = False, True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Act on a held signal now after an epoch's last validation; after one inside the epoch
        (trainer.val_check_interval), after the next training batch: Lightning 2.6 restores a save
        taken right after such a validation with its logged step numbers one ahead."""
        if self._held and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            trainer._signal_connector.received_sigterm, self._held = True, False

    def _usr1_as_sigterm(self, signum, frame) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def _ctrl_c_as_sigterm(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self._requested = "SIGINT"
        rank_zero_info("Ctrl-C: saving a checkpoint after this batch (press Ctrl-C again to stop at once, unsaved)")
        os.kill(os.getpid(), signal.SIGTERM)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C, or one before training started
            self.reason = "SIGINT"
            rank_zero_warn(f"stopped by Ctrl-C without saving: {self.path} keeps the state it had")
            return
        if not isinstance(exception, SIGTERMException):
            return
        self.reason = self._requested or "SIGTERM"
        if trainer.sanity_checking or trainer.global_step == 0:
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            rank_zero_warn(f"interrupted with non-finite weights: {self.path} keeps the last good state")
            return
        trainer.save_checkpoint(self.path)
        rank_zero_info(f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path}")


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
