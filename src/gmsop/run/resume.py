"""What a run continues from: the checkpoint, its run folder and W&B run id, and whether the
checkpoint fits the config it is resumed with.

`trainer.resume` is one of:
- unset: a fresh run; its folder must not hold another run.
- a run folder or a .ckpt file: continue that run (same W&B run) in this run's new folder.
- `latest`: the newest run of this experiment (runs_dir/name) that has a last.ckpt and is not in use.
- `auto`: continue in place if this run's own folder holds a checkpoint (a re-submitted or
  requeued job with a fixed hydra.run.dir, e.g. trainer=slurm), else start fresh.

Every checkpoint records the run's config, folder and W&B id (key `gmsop`), so a resume
knows which W&B run to continue and refuses a config that does not fit the checkpoint. A run
folder continued into another one records that (`continued_in.json`); continuing it a second
time is a fork and gets a W&B run of its own, so two diverging histories never share one.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from gmsop.config import ModelConfig, OptimConfig
from gmsop.data import DATA
from gmsop.errors import UserError
from gmsop.heads import HEADS
from gmsop.models.classifier import classifier_bn
from gmsop.models.learning_rate import LearningRate, learning_rate
from gmsop.models.optimisation import complete_optim
from gmsop.registry import ConfigError, Registry, complete
from gmsop.run_folder import (
    LAST_CKPT,
    MLFLOW_ID_FILE,
    RECORD_KEY,
    WANDB_ID_FILE,
    CheckpointError,
    EarlierLog,
    RunLock,
    continuation_of,
    earlier_log,
    is_locked,
    logger_id_in,
    read_checkpoint,
    readable_checkpoint,
    require_fresh,
    run_folder_of,
)

# Data keys that change how data is read, not what the model learns: free to differ on resume.
DATA_KEYS_FREE_ON_RESUME = ("root", "num_workers", "eval_batch_size", "verify_images")
# how the model is run, not what it computes: a run may resume compiled, NHWC or not
MODEL_KEYS_FREE_ON_RESUME = ("compile", "channels_last", "precise_bn_batches")


class ResumeError(UserError, FileNotFoundError):
    """No checkpoint at the place trainer.resume names."""


PLAN_ENV = "GMSOP_RESUME_PLAN"  # rank 0's plan, inherited by the DDP processes it launches
# What a DDP process launched by rank 0 inherits of the plan (the loaded checkpoint and the locks stay with rank 0)
_INHERITED = ("ckpt", "source", "wandb_id", "in_place", "continued_in", "mlflow_id", "step")


@dataclass
class ResumePlan:
    """Everything a run's start decides about what it continues: made once (`open_plan`), by rank 0
    for every process of the run, and passed down; nothing downstream goes back to ask."""

    ckpt: Optional[Path] = None  # None: a fresh run
    source: Optional[Path] = None  # the run folder the checkpoint belongs to
    wandb_id: Optional[str] = None  # the W&B run to log to (continued, or new once open_plan has run)
    in_place: bool = False  # continuing in the run's own folder (trainer.resume=auto)
    checkpoint: Optional[dict] = None  # the loaded checkpoint (for the compatibility check; rank 0)
    continued_in: Optional[str] = None  # another run already continued this one: this is a fork
    mlflow_id: Optional[str] = None  # the MLflow run this one continues (a resume gets a new one, tagged with it)
    step: Optional[int] = None  # the checkpoint's global step: where the CSV log continues
    locks: list[RunLock] = field(default_factory=list)  # held by rank 0: this run's folder, and the source's
    earlier_log: Optional[EarlierLog] = None  # the source's CSV log up to `step`, which this run continues (rank 0)

    def __post_init__(self) -> None:
        if self.step is None and self.checkpoint:
            self.step = int(self.checkpoint["global_step"])

    def to_json(self) -> str:
        """The plan as the DDP processes rank 0 launches inherit it."""
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items() if k in _INHERITED})

    @classmethod
    def from_json(cls, text: str) -> ResumePlan:
        d = json.loads(text)
        return cls(**{k: Path(v) if k in ("ckpt", "source") and v else v for k, v in d.items()})

    def release(self, forget: bool = False) -> None:
        """Release the run folders' locks (`forget`: as RunLock.release, when nothing was written)."""
        while self.locks:
            self.locks.pop().release(forget=forget)


def open_plan(resume: Optional[str], run_dir: Path, experiment_runs: Path, rank_zero: bool) -> ResumePlan:
    """The run's plan. Rank 0 locks run_dir (and the folder it continues, if another), decides
    (plan_resume), picks a new W&B run id if none is continued and leaves the plan in the
    environment; the DDP processes it launched take that plan as it is."""
    inherited = os.environ.get(PLAN_ENV)
    if not rank_zero and inherited:
        return ResumePlan.from_json(inherited)
    lock = RunLock(run_dir, "train a run in it") if rank_zero else None
    try:
        plan = plan_resume(resume, run_dir, experiment_runs, lock)
        plan.locks = [lock] if lock else []
        if plan.source is not None and not plan.in_place and rank_zero:
            plan.locks.append(RunLock(plan.source, "continue the run it holds"))
    except BaseException:
        if lock is not None:
            lock.release(forget=True)
        raise
    plan.wandb_id = plan.wandb_id or new_wandb_id()
    plan.mlflow_id = logger_id_in(plan.source or run_dir, MLFLOW_ID_FILE)
    if plan.source is not None and plan.step is not None:
        plan.earlier_log = earlier_log(plan.source, plan.step)
    if rank_zero:
        os.environ[PLAN_ENV] = plan.to_json()
    return plan


def new_wandb_id() -> str:
    """A W&B run id (8 lowercase letters/digits, like W&B's own)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def plan_resume(
    resume: Optional[str], run_dir: Path, experiment_runs: Path, lock: Optional[RunLock] = None
) -> ResumePlan:
    """trainer.resume -> what to continue from (see the module docstring). `lock`: the one this
    process holds on run_dir (a lock file held before by another process is a trace of a run)."""
    if not resume:
        require_fresh(run_dir, lock)
        return ResumePlan()
    if resume == "auto":
        found = readable_checkpoint(run_dir)
        if found is None:  # killed before its first checkpoint (or new): start over, as the same W&B run
            return ResumePlan(wandb_id=_wandb_id_in(run_dir))
        return _plan(*found, in_place=True)
    if resume == "latest":
        candidates = [
            p
            for p in experiment_runs.glob(f"**/{LAST_CKPT}")
            if run_folder_of(p) != run_dir and not is_locked(run_folder_of(p))
        ]
        if not candidates:
            raise ResumeError(f"trainer.resume=latest: no {LAST_CKPT} under {experiment_runs} (outside runs in use)")
        found = readable_checkpoint(run_folder_of(max(candidates, key=lambda p: p.stat().st_mtime)))
    else:
        path = Path(resume).expanduser()
        if path.is_dir():
            found = readable_checkpoint(path)
        else:
            found = (path, read_checkpoint(path, for_resume=True)) if path.is_file() else None
        if found is None:
            raise ResumeError(
                f"trainer.resume={resume}: no checkpoint at {path / LAST_CKPT if path.is_dir() else path} "
                "(give a .ckpt, a run folder, 'latest' or 'auto')"
            )
    if run_folder_of(found[0]).resolve() == Path(run_dir).resolve():  # this folder's own run: continue it in place
        return _plan(*found, in_place=True)
    require_fresh(run_dir, lock)
    return _plan(*found, in_place=False)


def _plan(ckpt: Path, checkpoint: dict, in_place: bool) -> ResumePlan:
    """Continue from ckpt, as the same W&B run, unless another run already continued its folder:
    then this is a fork, and a new W&B run keeps the two histories apart."""
    record = checkpoint.get(RECORD_KEY) or {}
    source = run_folder_of(ckpt)
    wandb_id = record.get("wandb_id") or _wandb_id_in(source)
    continued = continuation_of(source)
    if continued and continued.get("wandb_id") == wandb_id:  # that W&B run went on elsewhere
        return ResumePlan(ckpt, source, None, in_place, checkpoint, continued.get("run_dir"))
    return ResumePlan(ckpt, source, wandb_id, in_place, checkpoint)


def _wandb_id_in(run_dir: Path) -> Optional[str]:
    return logger_id_in(run_dir, WANDB_ID_FILE)


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys (dotted) whose values differ between two nested mappings, with both values."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        name = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} in the checkpoint, {b!r} now")
    return out


def config_differences(checkpoint: dict, current: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's model/head/optim/data/classes and the current ones
    (data keys that only say where and how data is read are ignored)."""
    saved = dict(checkpoint["hyper_parameters"])

    def comparable(h: Mapping[str, Any], other: Mapping[str, Any]) -> dict:
        """Another head or data module differs by its name; its options are then not listed."""

        def part(key: str, registry: Registry) -> dict:
            mine, theirs = h.get(key) or {}, other.get(key) or {}
            if mine.get("name") != theirs.get("name"):
                return {"name": mine.get("name")}
            return _with_defaults(registry, mine)

        data = part("data", DATA)
        data = {k: v for k, v in data.items() if k not in DATA_KEYS_FREE_ON_RESUME}
        model = _model_with_defaults(h.get("model"), (h.get("head") or {}).get("name"))
        model = {k: v for k, v in model.items() if k not in MODEL_KEYS_FREE_ON_RESUME}
        return {
            "model": model,
            "head": part("head", HEADS),
            "optim": _optim_with_defaults(h.get("optim")),
            "data": data,
            "num_classes": h.get("num_classes"),
            "in_chans": h.get("in_chans"),
        }

    return differences(comparable(saved, current), comparable(current, saved))


def _model_with_defaults(cfg: Optional[Mapping[str, Any]], head_name: Optional[str]) -> dict:
    """The model config with the schema's defaults (checkpoints of older versions lack newer keys),
    model.bn resolved for the head (null: the head's choice; checkpoints record it resolved)."""
    try:
        model = complete(ModelConfig, cfg or {}, "model", "the model")
    except ConfigError:
        return dict(cfg or {})
    model["bn"] = classifier_bn(model, head_name)
    return model


# What optim.lr meant in checkpoints made before it became a base rate scaled to the batch
# (gmsop.models.learning_rate): the rate itself.
OPTIM_BEFORE_LR_SCALING = {"lr_scaling": "none"}


def _optim_with_defaults(cfg: Optional[Mapping[str, Any]]) -> dict:
    """The optim config with the schema's defaults; an older checkpoint's, without optim.lr_scaling,
    as it trained: at optim.lr unscaled (resuming it asks for optim.lr_scaling=none)."""
    cfg = dict(cfg or {})
    if cfg and "lr_scaling" not in cfg:
        cfg.update(OPTIM_BEFORE_LR_SCALING)
    try:
        return complete(OptimConfig, cfg, "optim", "the optimiser")
    except ConfigError:
        return cfg


def _with_defaults(registry: Registry, cfg: Optional[Mapping[str, Any]]) -> dict:
    """cfg with its constructor defaults filled in, so a default written out and one left out
    compare equal (checkpoints of older versions have fewer keys); as saved if it no longer validates."""
    try:
        return registry.validate(cfg) if cfg else {}
    except ConfigError:
        return dict(cfg)


def check_compatible(plan: ResumePlan, current: Mapping[str, Any], allow_changes: bool) -> list[str]:
    """Refuse (CheckpointError) to resume with a config that differs from the checkpoint's, naming
    the keys, unless allow_changes; return the differences (to warn about)."""
    if plan.checkpoint is None:
        return []
    diff = config_differences(plan.checkpoint, current)
    if diff and not allow_changes:
        raise CheckpointError(
            f"cannot resume {plan.ckpt} with a different config:\n  "
            + "\n  ".join(diff)
            + "\nResume with the checkpoint's settings, or pass trainer.resume_allow_changes=true to continue "
            "anyway (the optimiser and schedule state still come from the checkpoint)"
        )
    return diff


def check_schedule_length(plan: ResumePlan, max_epochs: int) -> None:
    """Refuse (CheckpointError) to resume a cosine schedule for another number of epochs, naming
    trainer.max_epochs: its length (T_max) is fixed when the run starts and comes back with the
    checkpoint, so a run extended past it annealed to optim.min_lr and climbed again (a 2-epoch run
    resumed for 4 trained at 1e-3, 5e-4, 0, 5e-4), even with trainer.resume_allow_changes."""
    if plan.checkpoint is None:
        return
    schedules = plan.checkpoint.get("lr_schedulers") or []
    t_max = schedules[0].get("T_max") if schedules and isinstance(schedules[0], dict) else None
    if t_max is not None and t_max != max(1, max_epochs):
        raise CheckpointError(
            f"cannot resume {plan.ckpt} with trainer.max_epochs={max_epochs}: its cosine schedule "
            f"(optim.scheduler=cosine) anneals over {t_max} epochs, the run's trainer.max_epochs when it "
            f"started; past them the learning rate would fall to optim.min_lr and climb again. Resume with "
            f"trainer.max_epochs={t_max}, or start a new run with the length you want"
        )


def check_weights_fit(plan: ResumePlan, model: torch.nn.Module) -> None:
    """Refuse (CheckpointError) a checkpoint whose weights cannot load into model, naming the
    tensors, before anything is written (even with trainer.resume_allow_changes)."""
    if plan.checkpoint is None:
        return
    saved, current = plan.checkpoint["state_dict"], model.state_dict()
    problems = [
        f"{k}: {tuple(saved[k].shape)} in the checkpoint, {tuple(v.shape)} now"
        for k, v in current.items()
        if k in saved and saved[k].shape != v.shape
    ]
    problems += [f"{k}: not in the checkpoint" for k in sorted(set(current) - set(saved))]
    problems += [f"{k}: in the checkpoint, not in this model" for k in sorted(set(saved) - set(current))]
    if problems:
        listed = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise CheckpointError(f"the weights in {plan.ckpt} do not fit this model:\n  {listed}")


RATE_KEYS = (
    "optim.lr",
    "optim.lr_reference_batch",
    "optim.lr_scaling",
    "data.batch_size",
    "trainer.accumulate_grad_batches",
)


def check_rate_unchanged(plan: ResumePlan, current: Mapping[str, Any]) -> None:
    """Refuse (CheckpointError) to resume at another learning rate than the checkpoint trained at,
    naming the keys that changed it (a changed global batch scales optim.lr), even with
    trainer.resume_allow_changes: the optimiser and schedule come back with the checkpoint's rate, so
    the run trained at the old one while it logged and recorded the new one. `current`: the run's
    config as plain containers. Checkpoints that do not record their config are not checked."""
    if plan.checkpoint is None or not isinstance(plan.checkpoint.get(RECORD_KEY), Mapping):
        return
    saved = plan.checkpoint[RECORD_KEY].get("config")
    if not isinstance(saved, Mapping) or not {"optim", "data", "trainer"} <= set(saved):
        return
    before, now = _rate_of(saved), _rate_of(current)
    if math.isclose(before.rate, now.rate, rel_tol=1e-12):
        return
    changed = [key for key in RATE_KEYS if _value(saved, key) != _value(current, key)]
    raise CheckpointError(
        f"cannot resume {plan.ckpt} at another learning rate: it trained at {before.rate:.4g} "
        f"(global batch {before.global_batch}), this config gives {now.rate:.4g} (global batch {now.global_batch}); "
        f"changed: {', '.join(f'{k}={_value(current, k)} (was {_value(saved, k)})' for k in changed)}. The optimiser "
        f"and schedule would go on at {before.rate:.4g} while the run recorded {now.rate:.4g}, so this is refused "
        "even with trainer.resume_allow_changes. Resume with the checkpoint's values, or start a new run from its "
        "weights (gmsop.export, then model.pretrained_file)"
    )


def _value(config: Mapping[str, Any], dotted: str) -> Any:
    """A rate key's value in a run config, with the defaults of its section filled in."""
    section, key = dotted.split(".")
    values = config.get(section) or {}
    if section == "data":
        values = _with_defaults(DATA, values)
    elif section == "optim":
        values = complete_optim(values)
    value = values.get(key)
    return 1 if value is None and dotted == "trainer.accumulate_grad_batches" else value


def _rate_of(config: Mapping[str, Any]) -> LearningRate:
    global_batch = int(_value(config, "data.batch_size")) * int(_value(config, "trainer.accumulate_grad_batches"))
    return learning_rate(complete_optim(config["optim"]), global_batch)
