"""Stop signals end a run at a point it resumes from exactly, with its state saved."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from gmsop.callbacks.lightning_internals import accumulating, stop_at_next_batch, validation_follows
from gmsop.stop_signals import take_forwarded_signals


class SaveOnInterrupt(L.Callback):
    """On a stop signal, save the current training state to last.ckpt so nothing since the last
    epoch is lost; never on other errors, nor weights that are no longer finite.

    Stop signals: SIGTERM (preemption), SIGINT (Ctrl-C), SIGHUP (a closed terminal or ssh
    session; not when ignored, as under nohup) and, outside SLURM, SIGUSR1 (under SLURM Lightning's
    own handler, checkpoint + requeue, stays). Whether they reach the training process alone, its
    whole process group, or its loader processes alone (which pass them on: gmsop.stop_signals),
    the run stops at the same point. A handler only notes the signal; the decision is taken at
    points where the saved state resumes exactly: after a training batch that stepped (not in the
    middle of a gradient accumulation, whose summed gradients are in no checkpoint) and that no
    validation follows, or when an epoch's last validation ends (a validation is never cut short:
    a resumed run would not validate that epoch; after one inside an epoch, with
    trainer.val_check_interval, Lightning 2.6 restores a save with its logged step numbers one
    ahead, so the next training batch is awaited). Lightning then raises SIGTERMException at the
    batch boundary and `on_exception` saves. With several processes (DDP) the decision is taken
    together: every process's request is combined at each decision point (one all-reduce), so
    all stop at the same batch whichever process was signalled.

    A second Ctrl-C stops at once without saving. `reason` names the interruption (the signal's
    name, e.g. "SIGTERM"); gmsop.stop_signals.EXIT_CODES gives its exit code.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.reason: Optional[str] = None
        self._pending = 0  # the stop signal noted and not yet acted on (0: none)
        self._ctrl_c = False
        self._previous: dict[int, Any] = {}
        self._taken: set[int] = set()
        self._stop_forwarding: Optional[Callable[[], None]] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_signals()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test":  # (before Lightning installs its own SIGTERM handler for the stage)
            self._sigterm_before_test = signal.getsignal(signal.SIGTERM)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The test stage stops on the same signals, at a batch's end; nothing is saved (training
        has finished, and a resumed run tests again from the start). SIGTERM is restored to what it
        was before Lightning's handler, as in training."""
        self._take_signals()
        self._previous[signal.SIGTERM] = getattr(self, "_sigterm_before_test", self._previous[signal.SIGTERM])
        signal.signal(signal.SIGTERM, self._on_signal)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._decide(trainer)  # Lightning's test loop then raises SIGTERMException

    def _take_signals(self) -> None:
        self._pending, self._ctrl_c, self.reason = 0, False, None
        taken = []
        # SIGINT and SIGHUP unless ignored (a background job, nohup); a command's own handler (a sweep
        # stops between trials on them: gmsop.stop_signals.stop_signals_end) gives way to the run's
        if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            taken.append(signal.SIGINT)
        if signal.getsignal(signal.SIGHUP) not in (signal.SIG_IGN, None):
            taken.append(signal.SIGHUP)
        if not SLURMEnvironment.detect() and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            taken.append(signal.SIGUSR1)
        self._taken = {*taken, signal.SIGTERM}
        for signum in taken:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        # SIGTERM is taken in on_train_start, after Lightning's handler; restored to what it was before both
        self._previous[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
        self._stop_forwarding = take_forwarded_signals(self._on_forwarded)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """SIGTERM is noted like the others, replacing Lightning's handler, which sets its flag at once
        (so each process of a DDP job stopped where its own signal found it) and, with several
        processes, broadcast from inside the handler, a collective the ranks ran a different number
        of times (Lightning issue #20806: the job hung). (Registered here: Lightning sets its
        handlers after on_fit_start.)"""
        signal.signal(signal.SIGTERM, self._on_signal)
        slurm_requeue = signal.getsignal(signal.SIGUSR1)
        if signal.SIGUSR1 not in self._previous and callable(slurm_requeue):
            # Under SLURM, Lightning's SIGUSR1 handler saves hpc_ckpt_N.ckpt and requeues the job: once.
            # SLURM's --signal reaches every process of the job step, loader processes included, and
            # each passes it on (a job with 2 ranks x 2 loader processes requeued itself 5 times).
            self._previous[signal.SIGUSR1] = slurm_requeue
            signal.signal(signal.SIGUSR1, self._once(slurm_requeue))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_signal_handlers()

    def restore_signal_handlers(self) -> None:
        """Put back the handlers found at fit start. Also called by the run once `fit` has returned or
        raised: after an exception Lightning calls no teardown hook, and its signal connector then
        re-installs the handlers it found, which were these (a dead run's handlers then took the
        next run's Ctrl-C)."""
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)
        if self._stop_forwarding is not None:
            self._stop_forwarding()
            self._stop_forwarding = None

    @staticmethod
    def _once(handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
        done = []

        def first_time_only(signum: int, frame: Any) -> None:
            if not done:
                done.append(signum)
                handler(signum, frame)

        return first_time_only

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self._ctrl_c:
                raise KeyboardInterrupt  # the second Ctrl-C: stop at once
            self._ctrl_c = True
            rank_zero_info("Ctrl-C: saving a checkpoint after this batch (press Ctrl-C again to stop at once, unsaved)")
        if signum == signal.SIGHUP:
            _quiet_closed_terminal()
        self._pending = self._pending or int(signum)

    def _on_forwarded(self, signum: signal.Signals) -> None:
        """A loader process passed a stop signal on: as if this process had it, unless this process is
        already stopping (a group signal reached both: a group Ctrl-C is one press, not two)."""
        if self._pending:
            return
        if signum in self._taken:
            self._on_signal(signum, None)
        else:  # a handler not ours (Lightning's SLURM requeue), or ignored
            signal.raise_signal(signum)

    def _decide(self, trainer: L.Trainer) -> None:
        """Stop at this point if any process noted a signal (the same answer on every process)."""
        pending = self._pending
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([pending], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            pending = int(flag.item())
        if pending:
            self.reason = signal.Signals(pending).name
            stop_at_next_batch(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if accumulating(trainer) or validation_follows(trainer):
            return  # mid-accumulation, or a validation follows: decided after it (or the next step)
        self._decide(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            self._decide(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C, or one before training started
            self.reason = "SIGINT"
            rank_zero_warn(f"stopped by Ctrl-C without saving: {self.path} keeps the state it had")
            return
        if not isinstance(exception, SIGTERMException):
            return
        # (a SIGTERM before training started reached Lightning's handler, not ours)
        self.reason = self.reason or (signal.Signals(self._pending).name if self._pending else "SIGTERM")
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.global_step == 0:
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            rank_zero_warn(f"interrupted with non-finite weights: {self.path} keeps the last good state")
            return
        trainer.save_checkpoint(self.path)
        rank_zero_info(f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path}")


def _quiet_closed_terminal() -> None:
    """After a hang-up, writes to the terminal fail (EIO) and would end the run before it saves:
    what went to the terminal goes to /dev/null from now on (as under nohup)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)
