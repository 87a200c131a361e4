"""Config schemas (dataclasses) validated by Hydra before any work starts (registered in
Hydra's config store by `gmsop.run.compose`).

`head` and `data` are free-form here: each registered head and data module validates its
own keys against its constructor signature (see `gmsop.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


from gmsop.registry import ConfigError


@dataclass
class ModelConfig:
    """Backbone (any timm name) and the classifier after the head."""

    backbone: str = "resnet18_64"
    pretrained: bool = False
    pretrained_file: Optional[str] = None  # local weights for pretrained=True; nothing is downloaded
    last_stride: Optional[int] = None  # small-image backbones: null = 1 for second-order heads, else 2
    output_stride: Optional[int] = None  # other timm CNNs: e.g. 16 removes the last downsampling
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    bn: bool = True  # BatchNorm1d on the pooled vector before the classifier
    dropout: float = 0.0


@dataclass
class OptimConfig:
    """Optimiser and per-epoch LR schedule."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    scheduler: str = "multistep"  # multistep | cosine | none
    milestones: List[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments, passed through by name, plus `resume` (ours)."""

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    # Ours, not the Trainer's (RUN_CONTROL_KEYS):
    resume: Optional[str] = None  # a .ckpt, a run folder, "latest" or "auto" (see gmsop.run.resume)
    resume_allow_changes: bool = False  # resume even if model/head/optim/data differ from the checkpoint's
    checkpoint_every_n_steps: Optional[int] = None  # also write last.ckpt every N steps (long epochs)


RUN_CONTROL_KEYS = ("resume", "resume_allow_changes", "checkpoint_every_n_steps")  # not passed to the Trainer


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "gmsop"
    entity: Optional[str] = None
    group: Optional[str] = None  # defaults to the experiment name (ablations group their runs)
    tags: List[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    csv: bool = True


@dataclass
class TrainConfig:
    name: str = "default"
    seed: int = 0
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    head: Dict[str, Any] = field(default_factory=lambda: {"name": "gap"})
    data: Dict[str, Any] = field(default_factory=lambda: {"name": "digits"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: Dict[str, Any] = field(default_factory=dict)  # name -> {_target_: ..., args}; see configs/callbacks


@dataclass
class EvalConfig:
    ckpt_path: str = "???"
    data: Dict[str, Any] = field(default_factory=dict)  # overrides of the checkpoint's data config
    accelerator: str = "auto"
    devices: Any = 1
    runs_dir: str = "runs"


def run_name(name: str) -> str:
    """The experiment name as a folder name: non-empty, no path separators (checked before any folder exists)."""
    if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", ".."):
        raise ConfigError(f"name={name!r}: give a non-empty experiment name without '/' (it names runs_dir/NAME)")
    return name
