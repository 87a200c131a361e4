"""A run's parts from its validated config: the data module and the model, checked against each
other and against the trainer settings before anything is written. Training, evaluation and the
learning-rate finder build runs here."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from gmsop.config import TrainConfig, check_known_keys
from gmsop.data import ImageDataModule, build_datamodule
from gmsop.data.base import split_global_batch
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.registry import ConfigError


def build_run(cfg: DictConfig) -> tuple[dict[str, Any], ImageDataModule, SecondOrderClassifier]:
    """cfg resolved to plain containers, its data module and its model (seeded first: the model's
    initial weights follow cfg.seed); config, data and model errors surface here, before any file."""
    check_known_keys(cfg, TrainConfig, "training")
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
    seen = []
    hook = model.backbone.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape[1:])))
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
        hook.remove()
        model.train(was_training)
    model.feature_map = seen[0] if seen else None  # (C, H, W): recorded in summary.json
    if model.feature_map is not None:
        warn_if_map_too_small(model, size)


def warn_if_map_too_small(model: SecondOrderClassifier, image_size: int) -> None:
    """Warn before training when the backbone's map has too few positions for the head's covariance:
    M positions give a covariance of rank at most M - 1, so a C x C covariance from fewer than C + 1
    positions is rank-deficient (an 8,256-d iSQRT vector from a 2 x 2 map carries at most 3 directions).
    Says which data.image_size gives full rank at the backbone's stride."""
    channels = model.head.largest_covariance()
    _, height, width = model.feature_map
    positions = height * width
    if channels is None or positions - 1 >= channels:
        return
    stride = _stride(model, image_size)
    side = math.ceil(math.sqrt(channels + 1))
    warnings.warn(
        f"head {model.head_name!r} pools a {channels}-channel covariance from a {height} x {width} map "
        f"({positions} positions, at data.image_size={image_size}): its rank is at most {positions - 1} of "
        f"{channels}. data.image_size={math.ceil(side * stride)} or more gives a {side} x {side} map and full rank",
        stacklevel=2,
    )


def _stride(model: SecondOrderClassifier, image_size: int) -> float:
    """The backbone's input pixels per map position, measured on a larger probe image (on a small
    one, padding and rounding blur it)."""
    probe = max(64, 4 * image_size)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            was_training = model.training
            width = model.eval().backbone(torch.zeros(1, model.hparams["in_chans"], probe, probe)).shape[-1]
            model.train(was_training)
        return probe / width
    except (AssertionError, RuntimeError, ValueError):  # a backbone that takes one input size only
        return image_size / model.feature_map[-1]


def normalise_like_the_weights(model: SecondOrderClassifier, datamodule: ImageDataModule) -> None:
    """Pretrained timm weights see inputs normalised as in their training (timm's data config),
    not with the data set's own statistics; said once at the start of the run."""
    stats = model.weights_normalisation()
    if stats is not None:
        datamodule.normalise_with(*stats)
        print(f"inputs normalised as the pretrained weights expect: mean {stats[0]}, std {stats[1]}")


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
