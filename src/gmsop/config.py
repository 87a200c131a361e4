"""Config schemas (dataclasses) validated by Hydra before any work starts (registered in
Hydra's config store by `gmsop.run.compose`).

`head` and `data` are free-form here: each registered head and data module validates its
own keys against its constructor signature (see `gmsop.registry`).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional, Union

import lightning as L
from omegaconf import OmegaConf

from gmsop.registry import ConfigError


@dataclass
class ModelConfig:
    """Backbone (any timm name) and the classifier after the head."""

    backbone: str = "resnet18_64"
    pretrained: bool = False
    pretrained_file: Optional[str] = None  # local weights for pretrained=True; nothing is downloaded
    last_stride: Optional[int] = None  # small-image backbones: null = 1 for second-order heads, else 2
    output_stride: Optional[int] = None  # other timm CNNs: e.g. 16 removes the last downsampling
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    # BatchNorm1d on the pooled vector before the classifier; null: the head's choice (the release's:
    # after a mixture's fusion, none for the baselines; PoolingHead.classifier_bn)
    bn: Optional[bool] = None
    dropout: float = 0.0
    freeze_stages: int = 0  # fine-tuning: freeze the first N backbone stages (timm feature_info; 1 = the stem)
    freeze_backbone_epochs: int = 0  # fine-tuning warm-up: train only the head and classifier for N epochs
    # torch.compile the backbone, head and classifier: false | true | a mode (e.g. max-autotune) |
    # {mode, backend, fullgraph, dynamic, options} (torch.compile's arguments)
    compile: Any = False
    channels_last: bool = False  # NHWC memory format for the backbone's weights and the input images
    # BatchNorm statistics re-estimated over this many training batches before each validation
    # (0: off; gmsop.callbacks.precise_bn); best.ckpt and last.ckpt hold the re-estimated ones
    precise_bn_batches: int = 0


@dataclass
class OptimConfig:
    """Optimiser and per-epoch LR schedule."""

    name: str = "sgd"  # sgd | adamw
    # a base rate for a batch of lr_reference_batch images, scaled to the run's global batch
    # (gmsop.models.learning_rate): linear | sqrt | none (none: lr is the rate as written)
    lr: float = 0.1
    lr_reference_batch: int = 256
    lr_scaling: str = "linear"
    # linear warm-up from warmup_start_factor x the rate over this many epochs (0: none), per step
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    scheduler: str = "multistep"  # multistep | cosine | none
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine floor
    # fine-tuning: learning rate multipliers per part (backbone, head, classifier), and no weight
    # decay on BatchNorm and bias parameters
    lr_mult: dict[str, float] = field(default_factory=lambda: {"backbone": 1.0, "head": 1.0, "classifier": 1.0})
    no_decay_bn_bias: bool = False


# Trainer arguments the run sets itself (loggers, callbacks, checkpoint IO, run folder).
TRAINER_SET_BY_THE_RUN = ("logger", "callbacks", "plugins", "default_root_dir")
# Where this project's default differs from Lightning's.
OUR_TRAINER_DEFAULTS = {"max_epochs": 10, "log_every_n_steps": 10, "precision": "32-true"}


def _config_type(hint: Any) -> Any:
    """A Trainer argument's type as a config type: simple types (and Optional of them) are
    checked when the config is composed; anything richer (int-or-float limits, devices,
    strategies, profilers) is kept as written and checked by the Trainer itself."""
    simple = (int, float, bool, str)
    if hint in simple:
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union and len(args) == 2 and type(None) in args:
        other = next(a for a in args if a is not type(None))
        if other in simple:
            return Optional[other]
    return Any


def _trainer_config() -> type:
    """Every `lightning.Trainer` argument with Lightning's default (or ours), plus the run-control
    keys: `trainer.X=...` works for any Trainer argument X, and an unknown X fails when composing.
    (`limit_train_batches=1` stays the integer 1: one batch, as in Lightning; 1.0 is all batches.)"""
    hints = typing.get_type_hints(L.Trainer.__init__)
    fields = []
    for name, param in inspect.signature(L.Trainer.__init__).parameters.items():
        if name == "self" or name in TRAINER_SET_BY_THE_RUN:
            continue
        default = OUR_TRAINER_DEFAULTS.get(name, param.default)
        fields.append((name, _config_type(hints.get(name, Any)), field(default=default)))
    fields += [
        ("resume", Optional[str], field(default=None)),  # a .ckpt, a run folder, "latest" or "auto" (gmsop.run.resume)
        ("resume_allow_changes", bool, field(default=False)),  # resume even if model/head/optim/data differ
        ("checkpoint_every_n_steps", Optional[int], field(default=None)),  # also write last.ckpt every N steps
        ("test", bool, field(default=True)),  # after fit, test best.ckpt on the test split once (run/test_stage.py)
    ]
    return make_dataclass("TrainerConfig", fields)


TrainerConfig = _trainer_config()


RUN_CONTROL_KEYS = ("resume", "resume_allow_changes", "checkpoint_every_n_steps", "test")  # not passed to the Trainer


# Each logger's `_target_` builds it from its options (gmsop.run.loggers.build_loggers)
@dataclass
class WandbConfig:
    _target_: str = "gmsop.run.loggers.wandb_logger"
    enabled: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "gmsop"
    entity: Optional[str] = None
    group: Optional[str] = None  # defaults to the experiment name (ablations group their runs)
    tags: list[str] = field(default_factory=list)
    log_model: Any = False  # checkpoints as W&B artifacts: false | true (best and last, at the end) | all (each)
    images: bool = True  # the run's plots (learning curves) as W&B images when it ends


@dataclass
class TensorBoardConfig:
    _target_: str = "gmsop.run.loggers.tensorboard_logger"
    enabled: bool = False  # RUN/tensorboard (logger=tensorboard; `tensorboard --logdir runs`)


@dataclass
class MlflowConfig:
    _target_: str = "gmsop.run.loggers.mlflow_logger"
    enabled: bool = False  # logger=mlflow
    # default: one SQLite database for every run, RUNS_DIR/mlflow.db (no server; `mlflow ui
    # --backend-store-uri sqlite:///runs/mlflow.db` shows them); or any MLflow tracking URI
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None  # defaults to the experiment name


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # (the CSV log, RUN/csv/metrics.csv, is always written: it is the run's own record, which
    # its learning curves, summary.json's best epoch and the report are read from)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class TrainConfig:
    name: str = "default"
    seed: int = 0
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    head: dict[str, Any] = field(default_factory=lambda: {"name": "gap"})
    data: dict[str, Any] = field(default_factory=lambda: {"name": "digits"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> {_target_: ..., args}; see configs/callbacks


@dataclass
class EvalConfig:
    ckpt_path: str = "???"
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the checkpoint's data config
    split: str = "test"  # test (the data set's evaluation split) or val (the hold-out choices were made on)
    accelerator: str = "auto"
    devices: Any = 1
    runs_dir: str = "runs"


def run_name(name: str) -> str:
    """The experiment name as a folder name: non-empty, no path separators (checked before any folder exists)."""
    if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", ".."):
        raise ConfigError(f"name={name!r}: give a non-empty experiment name without '/' (it names runs_dir/NAME)")
    return name


def unknown_keys(cfg: Any, schema: type, path: str = "") -> list[str]:
    """The keys of `cfg` (a composed config) that `schema` (a dataclass) does not declare, as dotted
    paths, looking into the sections that are dataclasses themselves. Hydra's `+key=value` adds a key
    that no schema declares, and nothing would read it."""
    fields = {f.name: f.type for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    found = []
    for key in cfg.keys():
        where = f"{path}{key}"
        if key not in fields:
            found.append(where)
            continue
        section = cfg[key] if not OmegaConf.is_missing(cfg, key) else None
        if dataclasses.is_dataclass(hints.get(key)) and OmegaConf.is_dict(section):
            found += unknown_keys(section, hints[key], f"{where}.")
    return found


def check_known_keys(cfg: Any, schema: type, command: str) -> None:
    """Refuse (ConfigError) keys that `command` does not use, naming them."""
    unknown = unknown_keys(cfg, schema)
    if unknown:
        allowed = ", ".join(f.name for f in dataclasses.fields(schema))
        raise ConfigError(
            f"{command} does not use {', '.join(unknown)} (added with '+'?); nothing would read "
            f"{'it' if len(unknown) == 1 else 'them'}. Its top-level keys: {allowed}"
        )
