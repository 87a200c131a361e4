"""Lightning's private attributes, behind one door.

Some of what a run needs Lightning keeps only in private attributes: whether a validation follows
this batch, the running sums of an epoch's logged values, the flag that stops a fit at the next
batch. Every use of one is in this folder (`tests/test_architecture.py` looks for them anywhere
else), most of them through the functions below, and `PRIVATE` lists each with the Lightning
version it was written against. `tests/test_lightning_internals.py` fails, naming the attribute,
when the installed Lightning lacks one: after an upgrade it shows at once what to look at.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

WRITTEN_AGAINST = "2.6.6"


@dataclass(frozen=True)
class Private:
    """A private attribute of Lightning used here: `owner` ("module:Class", or "module" for a
    module-level name), its `name`, the Lightning `version` it was written against, and its `use`."""

    owner: str
    name: str
    use: str
    version: str = WRITTEN_AGAINST


# owner ("module:Class", or a module; pl. = lightning.pytorch., fabric. = lightning.fabric.), attribute, what uses it
_TABLE = """
pl.loops.fit_loop:_FitLoop                               _data_fetcher            validation_follows
pl.loops.training_epoch_loop:_TrainingEpochLoop          _should_check_val_fx     validation_follows
pl.loops.training_epoch_loop:_TrainingEpochLoop          _should_accumulate       accumulating
pl.loops.training_epoch_loop:_TrainingEpochLoop          _results                 epoch_results (EpochSums)
pl.trainer.trainer:Trainer                               _signal_connector        stop_at_next_batch
pl.trainer.connectors.signal_connector:_SignalConnector  received_sigterm         stop_at_next_batch
pl.callbacks:ModelCheckpoint                             _save_checkpoint         LastCheckpoint overrides it
pl.callbacks:ThroughputMonitor                           _compute                 TrainingThroughput overrides it
pl.callbacks:ThroughputMonitor                           _throughputs             timed_throughput
fabric.utilities.throughput:Throughput                   _time                    timed_throughput
pl.utilities.model_summary.model_summary                 _format_summary_table    ModelSummaryWithoutFlops
pl.loggers:WandbLogger                                   _wandb_init              drop_wandb_init_argument
pl.loggers:WandbLogger                                   _experiment              wandb_run_started
pl.loggers:CSVLogger                                     _experiment              ContinuedCSVLogger
pl.loggers.csv_logs:ExperimentWriter                     _check_log_dir_exists    _ContinuedWriter overrides it
pl.loggers.csv_logs:ExperimentWriter                     _rewrite_with_new_header _ContinuedWriter overrides it
"""
_PREFIXES = {"pl.": "lightning.pytorch.", "fabric.": "lightning.fabric."}
PRIVATE = tuple(
    Private(_PREFIXES[owner.split(".")[0] + "."] + owner.split(".", 1)[1], name, use)
    for owner, name, use in (line.split(None, 2) for line in _TABLE.strip().splitlines())
)

format_summary_table = _format_summary_table  # Lightning's text table of a model summary


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether a validation runs after the current training batch (every N batches, or the epoch's end)."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


def accumulating(trainer: L.Trainer) -> bool:
    """Whether the current batch is inside a gradient accumulation (the optimiser did not step)."""
    return trainer.fit_loop.epoch_loop._should_accumulate()


def epoch_results(trainer: L.Trainer) -> Any:
    """The training loop's result collection: running sums of the epoch's `self.log(..., on_epoch=True)` values."""
    return trainer.fit_loop.epoch_loop._results


def stop_at_next_batch(trainer: L.Trainer) -> None:
    """Make Lightning raise SIGTERMException at the next batch boundary (its own SIGTERM handler's flag)."""
    trainer._signal_connector.received_sigterm = True


def drop_wandb_init_argument(logger: Any, key: str) -> None:
    """Leave `key` out of the arguments WandbLogger passes to wandb.init."""
    logger._wandb_init.pop(key, None)


def wandb_run_started(logger: Any) -> bool:
    """Whether a WandbLogger has created its W&B run (reading `logger.experiment` would create one)."""
    return logger._experiment is not None


def timed_throughput(monitor: Any, stage: Any) -> Any:
    """A ThroughputMonitor's Throughput for `stage` once it has timed some of it, else None."""
    throughput = monitor._throughputs.get(stage)
    if throughput is None or not throughput._time or throughput._time[-1] <= 0:
        return None
    return throughput


def missing(private: Private) -> bool:
    """Whether the installed Lightning lacks `private`: no such owner, or an owner that neither has
    the attribute nor sets it (`self.NAME`) in its own or a Lightning base class's source."""
    module_name, _, owner_name = private.owner.partition(":")
    try:
        owner = importlib.import_module(module_name)
        owner = getattr(owner, owner_name) if owner_name else owner
    except (ImportError, AttributeError):
        return True
    if hasattr(owner, private.name):
        return False
    if not isinstance(owner, type):
        return True
    for cls in owner.__mro__:
        if cls.__module__.startswith("lightning") and f"self.{private.name}" in inspect.getsource(cls):
            return False
    return True
