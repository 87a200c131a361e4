"""Compose data, model, loggers and callbacks from a validated config, and fit."""

from __future__ import annotations

import errno
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from gmsop.callbacks.checkpoints import AtomicCheckpointIO, checkpoint_callbacks
from gmsop.callbacks.curves_plot import CurvesPlot
from gmsop.callbacks.epoch_sums import EpochSums
from gmsop.callbacks.run_record import RandomState, RunRecord
from gmsop.callbacks.throughput import TrainingThroughput
from gmsop.callbacks.wandb_summary import WandbBestSummary
from gmsop.config import RUN_CONTROL_KEYS
from gmsop.errors import UserError
from gmsop.paths import write_text_atomic
from gmsop.redact import redact_passwords
from gmsop.registry import ConfigError
from gmsop.run.build import build_run, check_global_batch, check_run_length
from gmsop.run.loggers import build_loggers, check_logger_config, finish_wandb
from gmsop.run.noise import quiet_known_noise
from gmsop.run.resume import (
    ResumePlan,
    check_compatible,
    check_rate_unchanged,
    check_schedule_length,
    check_weights_fit,
    open_plan,
)
from gmsop.run.test_stage import test_once
from gmsop.run_folder import (
    WANDB_ID_FILE,
    CheckpointError,
    best_epoch,
    newest_checkpoint,
    read_checkpoint,
    read_curves,
    record_continuation,
    write_logger_id,
    write_summary,
)
from gmsop.stop_signals import EXIT_CODES, hold_stop_signals, release_stop_signals


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]  # the last epoch's
    best_checkpoint: Optional[Path]
    wandb_dir: Optional[Path]
    best: Optional[dict] = None  # the best epoch (lowest val/top1_err) and its validation values
    selected_on: str = "val"  # the split that chose best.ckpt (test only with data.select_on_test)


class RunInterrupted(Exception):
    """Training stopped by a signal (SIGTERM/SIGUSR1 preemption, Ctrl-C, SIGHUP) after saving a resumable checkpoint."""

    def __init__(self, reason: str, run_dir: Path, checkpoint: Optional[Path]) -> None:
        self.reason, self.run_dir, self.checkpoint = reason, run_dir, checkpoint
        self.exit_code = EXIT_CODES.get(reason, 1)
        how = f"trainer.resume={run_dir}" if checkpoint else "nothing to resume yet (no finished step)"
        super().__init__(f"{reason}: training in {run_dir} interrupted; resume with {how}")


def run_training(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: Sequence[L.Callback] = (),
    config_files: Optional[Mapping[str, str]] = None,
    hold_signals_after: bool = False,
) -> RunResult:
    """Train cfg's model on cfg's data; write checkpoints, CSV/W&B logs and summary.json to run_dir.

    Before anything is written: the config, data and model are validated, run_dir is locked
    against other processes, and a fresh run refuses a folder that holds another run; a
    resume refuses a checkpoint whose config differs. `config_files` (name -> text) are then
    saved to run_dir/.hydra/. `extra_callbacks` join the run's own (e.g. a sweep's pruning).
    Raises RunInterrupted after SIGTERM/SIGUSR1/Ctrl-C (a resumable last.ckpt is saved).
    Stop signals that come once training has ended, while the run records how it ended, are held
    back; a finished run with `hold_signals_after` keeps holding them (a command that then exits: its
    exit status 0 agrees with summary.json), else they are acted on when it returns.
    """
    quiet_known_noise()
    release_stop_signals()  # (held since an earlier run in this process finished)
    rank_zero = rank_zero_only.rank == 0
    check_logger_config(cfg.logger)
    check_run_length(cfg.trainer, cfg.optim)
    check_global_batch(cfg.trainer, cfg.data)
    container, datamodule, model = build_run(cfg)
    run_dir = run_dir.resolve()
    plan = open_plan(cfg.trainer.resume, run_dir, Path(cfg.runs_dir).resolve() / cfg.name, rank_zero)
    written = False
    try:
        changed = check_compatible(plan, model.hparams, cfg.trainer.resume_allow_changes)
        check_rate_unchanged(plan, container)
        check_weights_fit(plan, model)
        if container["optim"]["scheduler"] == "cosine":
            check_schedule_length(plan, cfg.trainer.max_epochs)
        if changed:
            warnings.warn(f"resuming {plan.ckpt} with changed settings: " + "; ".join(changed), stacklevel=2)
        if plan.continued_in:
            warnings.warn(
                f"{plan.source} was already continued in {plan.continued_in}; this run is a fork of it, "
                "logged as a new W&B run so that the two histories do not mix",
                stacklevel=2,
            )
        if rank_zero:
            written = True
            _write_run_files(run_dir, config_files, plan)
        result = _fit(cfg, container, run_dir, datamodule, model, plan, extra_callbacks)
    except BaseException:
        release_stop_signals()  # (held while it recorded how it ended: one that came meanwhile is acted on now)
        raise
    finally:
        plan.release(forget=not written)
    if not hold_signals_after:
        release_stop_signals()
    return result


def _write_run_files(run_dir: Path, config_files: Optional[Mapping[str, str]], plan: ResumePlan) -> None:
    """The W&B run id from the first second (so a crash at any point resumes the same W&B run),
    and the run config (kept as first written when a run continues in place)."""
    wandb_id = plan.wandb_id
    write_logger_id(run_dir, WANDB_ID_FILE, wandb_id)
    if plan.source is not None and not plan.in_place and not plan.continued_in:  # we hold its lock
        record_continuation(plan.source, run_dir, wandb_id)
    for name, text in (config_files or {}).items():
        path = run_dir / ".hydra" / name
        if not (plan.in_place and path.is_file()):
            path.parent.mkdir(exist_ok=True)
            write_text_atomic(path, redact_passwords(text))


def _fit(cfg, container, run_dir, datamodule, model, plan: ResumePlan, extra_callbacks) -> RunResult:
    loggers = build_loggers(cfg, run_dir, container, plan)
    best, interrupt, checkpoints = checkpoint_callbacks(run_dir, cfg.trainer.checkpoint_every_n_steps)
    throughput = TrainingThroughput()
    callbacks = [
        *checkpoints,
        RunRecord(run_dir, plan.wandb_id, redact_passwords(container)),
        RandomState(),
        EpochSums(),
        throughput,
        CurvesPlot(run_dir, f"{cfg.name} ({run_dir.name})"),
        WandbBestSummary(),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    callbacks += configured_callbacks(container["callbacks"]) + list(extra_callbacks)
    trainer_args = {k: v for k, v in container["trainer"].items() if k not in RUN_CONTROL_KEYS}
    trainer = L.Trainer(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **trainer_args,
    )
    start = time.perf_counter()
    status, error, disk_full, unrecorded = "finished", None, None, None
    metrics, wandb_dir, best_of_run = {}, None, None
    test = None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=plan.ckpt)
        if cfg.trainer.test:
            test = test_once(trainer, model, datamodule, best.best_model_path or None, run_dir)
    except SystemExit:  # SIGTERMException, or Lightning's sys.exit(1) after Ctrl-C
        if interrupt.reason is None:
            raise
        status = "interrupted"
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        disk_full = no_space_left(e)
        if disk_full is None:
            raise
        error = f"no space left on device: {disk_full.filename or disk_full}"
    finally:
        # Stop signals are held from here (see run_training): the run's handlers are gone, and a
        # signal now would end the process by default action with a summary that says otherwise.
        interrupt.restore_signal_handlers()
        hold_stop_signals()
        try:
            wandb_dir = finish_wandb(
                loggers,
                EXIT_CODES.get(interrupt.reason, 1) if status != "finished" else 0,
                run_dir,
                cfg.logger.wandb.images,
            )
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            metrics |= throughput.summary()
            curves = read_curves(run_dir)
            best_of_run = best_epoch(curves)
            if "val/top1_err" not in metrics and curves:  # nothing ran (a finished run resumed): its record
                last = curves[max(curves)]
                metrics = {k: v for k, v in last.items() if k != "lr" and not math.isnan(v)} | metrics
            if test is not None:
                metrics |= test["metrics"]
            if trainer.is_global_zero:
                fields = _summary_fields(cfg, container, datamodule, model, trainer)
                if status == "interrupted":  # where it resumes from (a second Ctrl-C stops unsaved)
                    fields |= _resumes_at(run_dir, trainer.global_step)
                fields |= {
                    "wall_s": time.perf_counter() - start,
                    "resumed_from": str(plan.ckpt) if plan.ckpt else None,
                    "best_checkpoint": best.best_model_path or None,
                    "best_score": None if best.best_model_score is None else float(best.best_model_score),
                    "best": best_of_run,  # the epoch of the lowest val/top1_err, with its validation values
                    "test": test,  # the test stage (test_stage.py): best.ckpt on the test split, once
                    "metrics": metrics,  # the last epoch's, and test/*
                }
                write_summary(run_dir, fields, status, interrupt.reason, error)
        except OSError as e:  # recording how a run ended must not bury why it ended
            if status == "finished" or (disk_full is None and no_space_left(e) is None):
                raise
            unrecorded = e
    if disk_full is not None:
        raise DiskFullError(disk_full, run_dir, trainer, unrecorded)
    if status == "interrupted":
        raise RunInterrupted(interrupt.reason, run_dir, newest_checkpoint(run_dir))
    best_path = Path(best.best_model_path) if best.best_model_path else None
    return RunResult(run_dir, metrics, best_path, wandb_dir, best_of_run, datamodule.selected_on)


def _resumes_at(run_dir: Path, stopped_at: int) -> dict[str, Any]:
    """An interrupted run's step as its newest checkpoint holds it (what a resume continues from),
    and the step it stopped at: they differ after a second Ctrl-C, which stops without saving."""
    ckpt = newest_checkpoint(run_dir)
    try:
        step = read_checkpoint(ckpt)["global_step"] if ckpt is not None else 0
    except CheckpointError:
        step = None
    return {"global_step": step, "stopped_at_step": stopped_at}


def no_space_left(error: BaseException) -> Optional[OSError]:
    """The "no space left on device" (or quota) error behind `error`, if one is (Lightning and
    torch wrap it in their own)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


class DiskFullError(UserError):
    """Training stopped because a disk filled up; says what is intact and how to resume."""

    def __init__(self, cause: OSError, run_dir: Path, trainer: L.Trainer, unrecorded: Optional[OSError]) -> None:
        where = f" while writing {cause.filename}" if cause.filename else ""
        ckpt = newest_checkpoint(run_dir)
        if ckpt is None:
            intact = "No checkpoint was written yet: the run starts over."
        else:
            try:
                saved = read_checkpoint(ckpt)
                at = f" (epoch {saved['epoch']}, step {saved['global_step']})"
            except CheckpointError:
                at = ""
            intact = f"{ckpt}{at} is intact: a checkpoint replaces the old file only once it is written whole."
        record = (
            f" summary.json could not be written either ({unrecorded.strerror or unrecorded}): this message is "
            "the run's only record of how it ended."
            if unrecorded is not None
            else " summary.json says so (status failed)."
        )
        super().__init__(
            f"no space left on device{where}: training stopped at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}. {intact} Free space on that disk, then resume with "
            f"trainer.resume={run_dir}.{record}"
        )


def configured_callbacks(specs: Mapping[str, Any]) -> list[L.Callback]:
    """The `callbacks` config group: each entry {_target_: CLASS, ...} is instantiated (null entries skipped)."""
    built = []
    for name, spec in specs.items():
        if spec is None:
            continue
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ConfigError(f"callbacks.{name}={spec!r}: give a mapping with _target_ (a Lightning callback class)")
        try:
            callback = instantiate(spec)
        except InstantiationException as e:
            raise ConfigError(f"callbacks.{name}: {e}") from None
        if not isinstance(callback, L.Callback):
            raise ConfigError(f"callbacks.{name}: {spec['_target_']} is not a Lightning callback")
        built.append(callback)
    return built


def _summary_fields(cfg, container, datamodule, model, trainer) -> dict[str, Any]:
    """What ran, for summary.json: the config's choices, the model's size and how far it trained."""
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "head": container["head"],
        "backbone": container["model"]["backbone"],
        "data": container["data"]["name"],
        "params": sum(p.numel() for p in model.parameters()),
        "feature_dim": model.head.out_dim,
        "feature_map": list(model.feature_map or []),  # the backbone's (C, H, W) at image_size
        "input_normalisation": datamodule.normalisation_source,  # whose mean/std: weights or data
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "learning_rate": model.lr_used.as_dict() if model.lr_used else None,  # optim.lr scaled to the global batch
        "selected_on": datamodule.selected_on,  # the split best.ckpt was chosen on: val, or test (select_on_test)
    }
