"""Compose data, model, loggers and callbacks from a validated config, and fit."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from gmsop.callbacks import LearningCurves, Throughput
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.paths import write_text_atomic
from gmsop.resume import WANDB_ID_FILE, resolve_resume, run_folder_of


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    best_checkpoint: Optional[Path]
    wandb_dir: Optional[Path]


def run_training(cfg: DictConfig, run_dir: Path, extra_callbacks: Sequence[L.Callback] = ()) -> RunResult:
    """Train cfg's model on cfg's data; write checkpoints, CSV/W&B logs and summary.json to run_dir.

    `extra_callbacks` join the run's own (e.g. a sweep's pruning callback).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
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
    ckpt_path, wandb_id = resolve_resume(cfg.trainer.resume, Path(cfg.runs_dir) / cfg.name)
    loggers = _loggers(cfg, run_dir, container, wandb_id)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val/top1_err", mode="min", save_last=True
    )
    throughput = Throughput()
    curves = LearningCurves(run_dir, f"{cfg.name} ({run_dir.name})", run_folder_of(ckpt_path) if ckpt_path else None)
    callbacks = [checkpoint, OnExceptionCheckpoint(run_dir / "checkpoints"), throughput, curves]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks += model.head.callbacks() + list(extra_callbacks)
    trainer_args = {k: v for k, v in container["trainer"].items() if k != "resume"}  # TrainerConfig mirrors Trainer
    trainer = L.Trainer(default_root_dir=run_dir, logger=loggers or False, callbacks=callbacks, **trainer_args)
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        wandb_dir = _finish_wandb(loggers)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(throughput.summary())
    summary = {
        "name": cfg.name,
        "head": container["head"],
        "backbone": container["model"]["backbone"],
        "data": container["data"]["name"],
        "params": sum(p.numel() for p in model.parameters()),
        "feature_dim": model.head.out_dim,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_s": time.perf_counter() - start,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "best_checkpoint": checkpoint.best_model_path or None,
        "metrics": metrics,
    }
    if trainer.is_global_zero:
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    return RunResult(run_dir, metrics, best, wandb_dir)


def _loggers(cfg: DictConfig, run_dir: Path, container: dict[str, Any], wandb_id: Optional[str]) -> list:
    loggers: list = []
    w = cfg.logger.wandb
    if w.enabled and w.mode != "disabled":
        if w.mode not in ("offline", "online"):
            raise ValueError(f"logger.wandb.mode={w.mode!r}; allowed: offline, online, disabled")
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
            name=run_dir.name,
            offline=w.mode == "offline",
            id=wandb_id,
            resume="allow" if wandb_id else None,
            config=container,
        )
        loggers.append(logger)
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    return loggers


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


def _finish_wandb(loggers: list) -> Optional[Path]:
    """Close the W&B run (one per job, so multirun logs every job); return its local folder."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            run_dir = Path(run.dir).parent  # .../wandb/offline-run-*/files -> .../offline-run-*
            write_text_atomic(Path(logger.save_dir) / WANDB_ID_FILE, run.id)
            run.finish()
            return run_dir
    return None
