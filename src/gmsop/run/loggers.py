"""The run's loggers: W&B (offline unless the user logs in), the continued CSV log, TensorBoard
and MLflow, as `configs/logger` selects them, each continuing the logger run of a resumed run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_method
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gmsop.callbacks.csv_logger import ContinuedCSVLogger
from gmsop.callbacks.lightning_internals import drop_wandb_init_argument, wandb_run_started
from gmsop.errors import require_extra
from gmsop.paths import held_lock
from gmsop.redact import command_line_redacted, redact_passwords
from gmsop.registry import ConfigError
from gmsop.run.resume import ResumePlan
from gmsop.run_folder import MLFLOW_ID_FILE, write_logger_id


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


@dataclass(frozen=True)
class RunContext:
    """What every logger of a run is given besides its own options."""

    name: str  # the experiment's (W&B group, MLflow experiment)
    run_dir: Path
    runs_dir: Path
    plan: ResumePlan  # the logger runs it continues
    config: dict[str, Any]  # the run's resolved config


def build_loggers(cfg: DictConfig, run_dir: Path, container: dict[str, Any], plan: ResumePlan) -> list:
    """W&B (if enabled), the continued CSV log (always: the run's own record), then every other
    logger `cfg.logger` enables, each built by its `_target_` (`instantiate_loggers`)."""
    run = RunContext(cfg.name, run_dir, Path(cfg.runs_dir), plan, redact_passwords(container))  # (what loggers record)
    built = instantiate_loggers(cfg.logger, run)
    wandb = [built.pop("wandb")] if "wandb" in built else []
    return [*wandb, ContinuedCSVLogger(run_dir, plan.earlier_log), *built.values()]


def instantiate_loggers(specs: DictConfig, run: RunContext) -> dict[str, Any]:
    """{key: logger} for each `logger.KEY` that is enabled: its `_target_` called with its other
    options and the run (a target may return None: nothing to log, e.g. logger.wandb.mode=disabled).
    (Hydra's `instantiate` would wrap every error the target raises; these name their keys.)"""
    built = {}
    for key, spec in specs.items():
        options = OmegaConf.to_container(spec, resolve=True)
        if not options.pop("enabled", True):
            continue
        logger = get_method(options.pop("_target_"))(run=run, **options)
        if logger is not None:
            built[key] = logger
    return built


def wandb_logger(
    *, run: RunContext, mode: str, project: str, entity, group, tags, log_model, images: bool
) -> Optional[WandbLogger]:
    """The W&B run this training logs to (offline unless logger.wandb.mode=online), continued when
    the plan continues one. (`images`: the run's plots, logged when it ends: finish_wandb.)"""
    if mode == "disabled":
        return None
    if mode == "online" and not _wandb_logged_in():
        raise RuntimeError(
            "logger.wandb.mode=online but W&B has no API key: run `wandb login` (or set WANDB_API_KEY), "
            "or keep the default logger.wandb.mode=offline and `wandb sync` the run folder later"
        )
    logger = WandbLogger(
        save_dir=str(run.run_dir),
        project=project,
        entity=entity,
        group=group or run.name,
        tags=list(tags),
        name=wandb_run_name(run.name, run.run_dir),
        log_model=log_model,
        offline=mode == "offline",
        id=run.plan.wandb_id,
        resume="allow",
        config=run.config,
    )
    # Lightning 2.6 always passes anonymous=None, which W&B >= 0.22 warns about on every run
    drop_wandb_init_argument(logger, "anonymous")
    if rank_zero_only.rank == 0:
        with command_line_redacted():
            logger.experiment  # noqa: B018  (W&B records the command line as its run starts: passwords masked)
    return logger


def tensorboard_logger(*, run: RunContext) -> TensorBoardLogger:
    """RUN/tensorboard (`tensorboard --logdir runs`)."""
    return TensorBoardLogger(save_dir=str(run.run_dir), name="tensorboard", version="", default_hp_metric=False)


def mlflow_logger(*, run: RunContext, tracking_uri: Optional[str], experiment: Optional[str]):
    """An MLflow run for this training (Lightning logs the model's hyperparameters to it). A resumed
    training gets a run of its own, tagged with the MLflow run it continues (MLflow refuses changed
    parameter values in one run, and a resume may change some: trainer.resume_allow_changes)."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri = tracking_uri or f"sqlite:///{(run.runs_dir / 'mlflow.db').resolve()}"
    tags = {"run_dir": str(run.run_dir)}
    if run.plan.mlflow_id:
        tags["resumed_from_mlflow_run"] = run.plan.mlflow_id
    run.runs_dir.mkdir(parents=True, exist_ok=True)
    # Creating the client and the first access create the database, its tables, the experiment
    # and the run; runs started at once raced on that (all but one died with "duplicate column
    # name"), so one process at a time.
    with held_lock(run.runs_dir / ".mlflow.lock"):
        logger = MLFlowLogger(
            experiment_name=experiment or run.name,
            run_name=wandb_run_name(run.name, run.run_dir),
            tracking_uri=uri,
            tags=tags,
        )
        run_id = logger.run_id if rank_zero_only.rank == 0 else None
    if run_id:
        write_logger_id(run.run_dir, MLFLOW_ID_FILE, run_id)
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


def finish_wandb(loggers: list, exit_code: int, run_dir: Path, images: bool) -> Optional[Path]:
    """Close the W&B run (one per job, so multirun logs every job), after logging the run's plots
    if `images`; return its local folder."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and wandb_run_started(logger):
            if images:
                _log_plots(logger, run_dir)
            run = logger.experiment
            run_dir = Path(run.dir).parent  # .../wandb/offline-run-*/files -> .../offline-run-*
            run.finish(exit_code=exit_code)
            return run_dir
    return None
