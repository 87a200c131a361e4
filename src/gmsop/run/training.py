"""Compose data, model, loggers and callbacks from a validated config, and fit."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import string
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gmsop.config import RUN_CONTROL_KEYS
from gmsop.data import ImageDataModule, build_datamodule
from gmsop.data.base import split_global_batch
from gmsop.errors import UserError, require_extra
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.paths import held_lock, write_text_atomic
from gmsop.registry import ConfigError
from gmsop.run.callbacks import TrainingThroughput, WandbBestSummary
from gmsop.run.checkpointing import AtomicCheckpointIO, checkpoint_callbacks
from gmsop.run.csv_log import ContinuedCSVLogger
from gmsop.run.curves import CurvesPlot, best_epoch, read_curves
from gmsop.run.epoch_sums import EpochSums
from gmsop.run.folder import MLFLOW_ID_FILE, SUMMARY, WANDB_ID_FILE, RunLock, run_folder_of
from gmsop.run.resume import (
    CONTINUED_FILE,
    CheckpointError,
    RandomState,
    ResumePlan,
    RunRecord,
    check_compatible,
    check_schedule_length,
    check_weights_fit,
    logger_id_in,
    newest_checkpoint,
    plan_resume,
    read_checkpoint,
)
from gmsop.run.test_stage import test_once
from gmsop.stop_signals import EXIT_CODES


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


def new_wandb_id() -> str:
    """A W&B run id (8 lowercase letters/digits, like W&B's own)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class _QuietLightning(logging.Filter):
    """Drops Lightning start-up lines that say nothing about the run: its advertisement
    ("💡 Tip: ... litlogger") and the note that our model summary replaces its default one."""

    NOISE = ("💡 Tip", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


# Known messages that say nothing about a run, each with why; installed when a run (or another
# command that drives Lightning) starts, not on import.
KNOWN_NOISE = (
    # Lightning 2.6 with torch >= 2.10, once per run; not ours to fix
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # A resume continues in its own checkpoints folder (fresh runs refuse a used folder, run/folder.py)
    r"Checkpoint directory .* exists and is not empty",
    # The data module restores the data position itself (data/sampling.py; tests/test_exact_resume.py),
    # which Lightning cannot see: its warning that a mid-epoch resume is unreliable would be false
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # Checkpoints made before the curves were read from the CSV log hold a removed callback's state
    r".*Please add the following callbacks: \['LearningCurves'\]",
    # ThroughputMonitor would also log FLOPs/s given a model's flops_per_batch (`gmsop.cost` counts them)
    r"When using the `ThroughputMonitor`, you need to define a `flops_per_batch`",
)
_quiet = _QuietLightning()


def quiet_known_noise() -> None:
    """Silence KNOWN_NOISE and Lightning's start-up noise for this process (idempotent)."""
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _quiet not in rank_zero_logger.filters:
        rank_zero_logger.addFilter(_quiet)
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)


PLAN_ENV = "GMSOP_RESUME_PLAN"  # rank 0's resume decision, inherited by the DDP processes it launches


def run_training(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: Sequence[L.Callback] = (),
    config_files: Optional[Mapping[str, str]] = None,
) -> RunResult:
    """Train cfg's model on cfg's data; write checkpoints, CSV/W&B logs and summary.json to run_dir.

    Before anything is written: the config, data and model are validated, run_dir is locked
    against other processes, and a fresh run refuses a folder that holds another run; a
    resume refuses a checkpoint whose config differs. `config_files` (name -> text) are then
    saved to run_dir/.hydra/. `extra_callbacks` join the run's own (e.g. a sweep's pruning).
    Raises RunInterrupted after SIGTERM/SIGUSR1/Ctrl-C (a resumable last.ckpt is saved).
    """
    quiet_known_noise()
    rank_zero = rank_zero_only.rank == 0
    check_logger_config(cfg.logger)
    check_run_length(cfg.trainer, cfg.optim)
    check_global_batch(cfg.trainer, cfg.data)
    container, datamodule, model = build_run(cfg)
    run_dir = run_dir.resolve()
    locks = [RunLock(run_dir, "train a run in it")] if rank_zero else []
    written = False
    try:
        plan = _plan(cfg, run_dir, rank_zero, locks[0] if locks else None)
        if plan.source is not None and not plan.in_place and rank_zero:
            locks.append(RunLock(plan.source, "continue the run it holds"))
        changed = check_compatible(plan, model.hparams, cfg.trainer.resume_allow_changes)
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
        wandb_id = plan.wandb_id or new_wandb_id()
        if rank_zero:
            written = True
            _write_run_files(run_dir, wandb_id, config_files, plan)
            os.environ[PLAN_ENV] = json.dumps(
                {
                    "ckpt": str(plan.ckpt) if plan.ckpt else None,
                    "wandb_id": wandb_id,
                    "source": str(plan.source) if plan.source else None,
                }
            )
        return _fit(cfg, container, run_dir, datamodule, model, plan, wandb_id, extra_callbacks)
    finally:
        for lock in locks:
            lock.release(forget=not written)


def build_run(cfg: DictConfig) -> tuple[dict[str, Any], ImageDataModule, SecondOrderClassifier]:
    """cfg resolved to plain containers, its data module and its model (seeded first: the model's
    initial weights follow cfg.seed); config, data and model errors surface here, before any file."""
    L.seed_everything(cfg.seed, workers=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    datamodule = build_datamodule(container["data"])
    model = SecondOrderClassifier(
        model=container["model"],
        head=container["head"],
        optim=container["optim"],
        num_classes=datamodule.num_classes,
        in_chans=datamodule.num_channels,
        data=container["data"],
    )
    normalise_like_the_weights(model, datamodule)
    datamodule.setup("fit")  # the data's own errors (a class with one image, a read-only cache folder) now
    check_input_size(model, datamodule)
    return container, datamodule, model


def check_input_size(model: SecondOrderClassifier, datamodule: ImageDataModule) -> None:
    """One image of the data's size through the model (eval mode, no gradients, random state kept):
    a backbone that wants another input size fails here, naming the keys, not with the backbone's
    own assertion once training has started (timm's ViTs: "Input height (32) doesn't match model (224)")."""
    size = datamodule.image_size
    x = torch.zeros(2, datamodule.num_channels, size, size)
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()(x)
    except (AssertionError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"model.backbone={model.hparams.model['backbone']} does not take data.image_size={size} inputs "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}). Set data.image_size to "
            "the size it expects, or tell the backbone the size (for timm's ViTs: "
            f"model.backbone_kwargs.img_size={size})"
        ) from None
    finally:
        model.train(was_training)


def normalise_like_the_weights(model: SecondOrderClassifier, datamodule: ImageDataModule) -> None:
    """Pretrained timm weights see inputs normalised as in their training (timm's data config),
    not with the data set's own statistics; said once at the start of the run."""
    stats = model.weights_normalisation()
    if stats is not None:
        datamodule.normalise_with(*stats)
        print(f"inputs normalised as the pretrained weights expect: mean {stats[0]}, std {stats[1]}")


def _plan(cfg: DictConfig, run_dir: Path, rank_zero: bool, lock: Optional[RunLock]) -> ResumePlan:
    """Rank 0 decides; processes it launched (DDP) take its decision from the environment."""
    inherited = os.environ.get(PLAN_ENV)
    if not rank_zero and inherited:
        d = json.loads(inherited)
        ckpt = Path(d["ckpt"]) if d["ckpt"] else None
        return ResumePlan(
            ckpt,
            Path(d["source"]) if d["source"] else None,
            d["wandb_id"],
            ckpt is not None and run_folder_of(ckpt) == run_dir,
        )
    return plan_resume(cfg.trainer.resume, run_dir, Path(cfg.runs_dir).resolve() / cfg.name, lock)


def _write_run_files(run_dir: Path, wandb_id: str, config_files: Optional[Mapping[str, str]], plan: ResumePlan) -> None:
    """The W&B run id from the first second (so a crash at any point resumes the same W&B run),
    and the run config (kept as first written when a run continues in place)."""
    write_text_atomic(run_dir / WANDB_ID_FILE, wandb_id)
    if plan.source is not None and not plan.in_place and not plan.continued_in:  # we hold its lock
        write_text_atomic(plan.source / CONTINUED_FILE, json.dumps({"run_dir": str(run_dir), "wandb_id": wandb_id}))
    for name, text in (config_files or {}).items():
        path = run_dir / ".hydra" / name
        if not (plan.in_place and path.is_file()):
            path.parent.mkdir(exist_ok=True)
            write_text_atomic(path, text)


def _fit(cfg, container, run_dir, datamodule, model, plan: ResumePlan, wandb_id: str, extra_callbacks) -> RunResult:
    loggers = _loggers(cfg, run_dir, container, wandb_id, plan)
    best, interrupt, checkpoints = checkpoint_callbacks(run_dir, cfg.trainer.checkpoint_every_n_steps)
    throughput = TrainingThroughput()
    callbacks = [
        *checkpoints,
        RunRecord(run_dir, wandb_id, container),
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
        interrupt.restore_signal_handlers()
        try:
            wandb_dir = _finish_wandb(
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
                _write_summary(
                    cfg,
                    container,
                    run_dir,
                    datamodule,
                    model,
                    trainer,
                    plan,
                    best,
                    best_of_run,
                    metrics,
                    status,
                    error,
                    time.perf_counter() - start,
                    interrupt.reason,
                    test,
                )
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


def _write_summary(
    cfg,
    container,
    run_dir,
    datamodule,
    model,
    trainer,
    plan,
    best,
    best_of_run,
    metrics,
    status,
    error,
    wall_s,
    reason,
    test,
) -> None:
    """summary.json: what ran, how it ended (finished / interrupted / failed), and its metrics."""
    summary = {
        "name": cfg.name,
        "seed": cfg.seed,
        "status": status,
        "head": container["head"],
        "backbone": container["model"]["backbone"],
        "data": container["data"]["name"],
        "params": sum(p.numel() for p in model.parameters()),
        "feature_dim": model.head.out_dim,
        "input_normalisation": datamodule.normalisation_source,  # whose mean/std: weights or data
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_s": wall_s,
        "resumed_from": str(plan.ckpt) if plan.ckpt else None,
        "best_checkpoint": best.best_model_path or None,
        "best_score": None if best.best_model_score is None else float(best.best_model_score),
        "best": best_of_run,  # the epoch of the lowest val/top1_err, with its validation values
        "learning_rate": model.lr_used.as_dict() if model.lr_used else None,  # optim.lr scaled to the global batch
        "selected_on": datamodule.selected_on,  # the split best.ckpt was chosen on: val, or test (select_on_test)
        "test": test,  # the test stage (test_stage.py): best.ckpt on the test split, once
        "metrics": metrics,  # the last epoch's, and test/*
    }
    if status == "interrupted":
        summary["interrupted_by"] = reason
        summary["resume_with"] = f"trainer.resume={run_dir}"
    if error:
        summary["error"] = error
    write_text_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2))


def check_run_length(trainer: DictConfig, optim: DictConfig) -> None:
    """Fail before anything is written, naming the key, for a run that would train nothing
    (trainer.max_epochs=0 ended "finished" with val nan and named a last.ckpt that did not exist)
    or a cosine schedule without a length in epochs (with trainer.max_epochs=-1 it annealed over
    one epoch and the learning rate alternated between optim.lr and 0)."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    for key, value in (("max_epochs", epochs), ("max_steps", steps)):
        if value == 0:
            raise ConfigError(f"trainer.{key}=0 trains nothing; allowed: >= 1, or -1 for no limit")
    if epochs is not None and epochs < -1:
        raise ConfigError(f"trainer.max_epochs={epochs}; allowed: >= 1, or -1 for no limit (with trainer.max_steps)")
    if optim.scheduler == "cosine" and (epochs is None or epochs < 1):
        raise ConfigError(
            f"optim.scheduler=cosine anneals over trainer.max_epochs epochs, and trainer.max_epochs={epochs} "
            "gives it no length: set trainer.max_epochs (>= 1), or use optim.scheduler=multistep or none"
        )


def check_global_batch(trainer: DictConfig, data: DictConfig) -> None:
    """data.batch_size is the global batch: fail before anything is written when the processes the
    trainer config names (an integer trainer.devices x trainer.num_nodes) cannot share it evenly.
    (Other device specs are checked by the data module once Lightning knows the process count.)"""
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    elif hasattr(devices, "__len__") and not isinstance(devices, str):  # a list of device indices
        devices = len(devices)
    if isinstance(devices, int) and devices > 0:
        split_global_batch(data.batch_size, devices * nodes, f"trainer.devices={devices} x trainer.num_nodes={nodes}")


def check_logger_config(logger: DictConfig) -> None:
    """Fail before anything is written, naming the key, for logger settings that cannot work."""
    if logger.mlflow.enabled:
        require_extra("mlflow", "mlflow", "logger=mlflow (logger.mlflow.enabled=true)")
    w = logger.wandb
    if w.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.wandb.mode={w.mode!r}; allowed: offline, online, disabled")
    if w.log_model not in (False, True, "all"):
        raise ConfigError(f"logger.wandb.log_model={w.log_model!r}; allowed: false, true, all")
    if w.enabled and w.log_model and w.mode != "online":
        raise ConfigError(
            f"logger.wandb.log_model={w.log_model} uploads checkpoints as W&B artifacts, which needs "
            "logger.wandb.mode=online (after `wandb login`); offline runs keep them in RUN/checkpoints"
        )


def _loggers(cfg: DictConfig, run_dir: Path, container: dict[str, Any], wandb_id: str, plan: ResumePlan) -> list:
    loggers: list = []
    w = cfg.logger.wandb
    if w.enabled and w.mode != "disabled":
        if w.mode == "online" and not _wandb_logged_in():
            raise RuntimeError(
                "logger.wandb.mode=online but W&B has no API key: run `wandb login` (or set WANDB_API_KEY), "
                "or keep the default logger.wandb.mode=offline and `wandb sync` the run folder later"
            )
        logger = WandbLogger(
            save_dir=str(run_dir),
            project=w.project,
            entity=w.entity,
            group=w.group or cfg.name,
            tags=list(w.tags),
            name=wandb_run_name(cfg.name, run_dir),
            log_model=w.log_model,
            offline=w.mode == "offline",
            id=wandb_id,
            resume="allow",
            config=container,
        )
        # Lightning 2.6 always passes anonymous=None, which W&B >= 0.22 warns about on every run
        logger._wandb_init.pop("anonymous", None)
        loggers.append(logger)
    loggers.append(ContinuedCSVLogger(run_dir, plan.source, plan.step))
    if cfg.logger.tensorboard:
        loggers.append(
            TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        )
    if cfg.logger.mlflow.enabled:
        loggers.append(_mlflow_logger(cfg, run_dir, plan.source))
    return loggers


def _mlflow_logger(cfg: DictConfig, run_dir: Path, resumed_from: Optional[Path]):
    """An MLflow run for this training (Lightning logs the model's hyperparameters to it). A resumed
    training gets a run of its own, tagged with the MLflow run it continues (MLflow refuses changed
    parameter values in one run, and a resume may change some: trainer.resume_allow_changes)."""
    from lightning.pytorch.loggers import MLFlowLogger

    m = cfg.logger.mlflow
    uri = m.tracking_uri or f"sqlite:///{(Path(cfg.runs_dir) / 'mlflow.db').resolve()}"
    tags = {"run_dir": str(run_dir)}
    earlier = logger_id_in(resumed_from or run_dir, MLFLOW_ID_FILE)
    if earlier:
        tags["resumed_from_mlflow_run"] = earlier
    Path(cfg.runs_dir).mkdir(parents=True, exist_ok=True)
    # Creating the client and the first access create the database, its tables, the experiment
    # and the run; runs started at once raced on that (all but one died with "duplicate column
    # name"), so one process at a time.
    with held_lock(Path(cfg.runs_dir) / ".mlflow.lock"):
        logger = MLFlowLogger(
            experiment_name=m.experiment or cfg.name,
            run_name=wandb_run_name(cfg.name, run_dir),
            tracking_uri=uri,
            tags=tags,
        )
        run_id = logger.run_id if rank_zero_only.rank == 0 else None
    if run_id:
        write_text_atomic(run_dir / MLFLOW_ID_FILE, run_id)
    return logger


# overrides that say how a run is launched, not what it trains: left out of W&B run names
LAUNCH_OVERRIDES = ("experiment=", "hydra.", "logger.", "trainer.enable_progress_bar", "runs_dir=")


def wandb_run_name(name: str, run_dir: Path, limit: int = 120) -> str:
    """The experiment name and the run's command-line overrides (in a multirun, what differs
    between its runs), e.g. `ablation_fashion_heads head=gap`; else the name and the run folder."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    chosen = [o for o in overrides if not o.lstrip("+~").startswith(LAUNCH_OVERRIDES) and not o.startswith("name=")]
    label = f"{name} {' '.join(chosen)}" if chosen else f"{name} {run_dir.name}"
    return label if len(label) <= limit else label[: limit - 3] + "..."


def _log_plots(logger: WandbLogger, run_dir: Path) -> None:
    """The run's plots as W&B images (key plots/NAME), so the W&B page shows what the folder holds."""
    for png in sorted((run_dir / "plots").glob("*.png")):
        logger.log_image(key=f"plots/{png.stem}", images=[str(png)])


def own_wandb_service() -> None:
    """Entry points call this first: the process starts its own W&B service rather than one named
    by WANDB_SERVICE, inherited from a parent process (a launcher script, a notebook, a test
    runner). In a shared service, a training killed with kill -9 leaves its run's stream open,
    and every resume then fails with "run ID ... is in use"."""
    os.environ.pop("WANDB_SERVICE", None)


def _wandb_logged_in() -> bool:
    """An API key in the environment, or in ~/.netrc where `wandb login` stores it."""
    return bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()


def _netrc_has_wandb() -> bool:
    import netrc

    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def _finish_wandb(loggers: list, exit_code: int, run_dir: Path, images: bool) -> Optional[Path]:
    """Close the W&B run (one per job, so multirun logs every job), after logging the run's plots
    if `images`; return its local folder."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            if images:
                _log_plots(logger, run_dir)
            run = logger.experiment
            run_dir = Path(run.dir).parent  # .../wandb/offline-run-*/files -> .../offline-run-*
            run.finish(exit_code=exit_code)
            return run_dir
    return None
