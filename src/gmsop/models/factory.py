"""Build a timm backbone that returns a B x C x H x W map for a pooling head."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import timm
import timm.utils.model
import torch
from timm.models import parse_model_name, split_model_name_tag
from torch import nn

from gmsop.config import ModelConfig
from gmsop.models import backbones  # noqa: F401  (registers the 64x64 paper backbones with timm)
from gmsop.registry import ConfigError, complete

SMALL_IMAGE_BACKBONES = ("resnet18_64", "wrn36_2_64")
_WEIGHTS_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("weights_from_checkpoint", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Within it, backbones are built without reading model.pretrained_file: a checkpoint's state
    dict replaces those weights, and the file may have moved since the run (timm's data config,
    which sets the input normalisation, does not need it)."""
    token = _WEIGHTS_FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FROM_CHECKPOINT.reset(token)


class FeatureMap(nn.Module):
    """Wraps a timm model so forward() returns its last map as NCHW.

    Handles NHWC maps (e.g. Swin) and token sequences with a square grid (ViTs: prefix
    tokens are dropped), so any timm name can feed a pooling head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))

    def weights_normalisation(self, channels: int) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) in [0, 1] units that the wrapped timm model's weights were
        trained with (timm's resolve_model_data_config); averaged over RGB for a one-channel input."""
        from timm.data import resolve_model_data_config

        config = resolve_model_data_config(self.model)
        mean, std = list(config["mean"]), list(config["std"])
        if len(mean) != channels:
            if channels != 1:
                raise ValueError(f"the weights were trained on {len(mean)} channels; the data has {channels}")
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)
        if f.dim() == 4:
            if f.shape[1] != self.num_features and f.shape[-1] == self.num_features:
                f = f.permute(0, 3, 1, 2)
            return f
        if f.dim() == 3:
            tokens = f[:, self.num_prefix_tokens :]
            side = int(round(tokens.shape[1] ** 0.5))
            if side * side != tokens.shape[1]:
                raise ValueError(f"backbone returns {tokens.shape[1]} tokens, not a square grid; cannot pool it")
            return tokens.transpose(1, 2).reshape(f.shape[0], -1, side, side)
        raise ValueError(f"backbone returns features of shape {tuple(f.shape)}; expected a map")


def create_backbone(cfg: Mapping[str, Any], in_chans: int, second_order: bool) -> FeatureMap:
    """timm.create_model(cfg.backbone, num_classes=0, global_pool='') with the head's stride choice."""
    cfg = complete(ModelConfig, cfg, "model", "the model")
    name = cfg["backbone"]
    check_backbone_name(name)
    kwargs: dict[str, Any] = dict(cfg["backbone_kwargs"])
    if kwargs.get("features_only"):
        raise ConfigError(
            "model.backbone_kwargs.features_only=true is not supported: the head pools the backbone's last map, "
            "which gmsop takes from forward_features; remove the key (model.output_stride sets the map's size)"
        )
    if name in SMALL_IMAGE_BACKBONES:
        last_stride = cfg["last_stride"]
        kwargs["last_stride"] = last_stride if last_stride is not None else (1 if second_order else 2)
    elif cfg["last_stride"] is not None:
        raise ConfigError(
            f"model.last_stride applies to {', '.join(SMALL_IMAGE_BACKBONES)}; for {name} use model.output_stride"
        )
    if cfg["output_stride"] is not None:
        kwargs["output_stride"] = cfg["output_stride"]
    pretrained = cfg["pretrained"] and not _WEIGHTS_FROM_CHECKPOINT.get()
    if pretrained:
        if not cfg["pretrained_file"]:
            raise ConfigError(
                "model.pretrained=true needs model.pretrained_file (a local weights file); nothing is downloaded"
            )
        if not Path(cfg["pretrained_file"]).expanduser().is_file():
            raise ConfigError(f"model.pretrained_file={cfg['pretrained_file']} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": cfg["pretrained_file"]}
    own = name in SMALL_IMAGE_BACKBONES  # registered here, without timm's pretrained configs
    if own:
        kwargs.pop("pretrained_cfg_overlay", None)
    model = timm.create_model(
        name, pretrained=pretrained and not own, num_classes=0, global_pool="", in_chans=in_chans, **kwargs
    )
    if pretrained and own:
        load_own_weights(model, Path(cfg["pretrained_file"]).expanduser(), name)
    freeze_stages(model, cfg["freeze_stages"], name)
    return FeatureMap(model)


def check_backbone_name(name: str) -> None:
    """Any name timm.create_model takes: a registered architecture with or without a pretrained tag
    (resnet50.a1_in1k), `local-dir:/folder` (a model folder on disk) or `hf-hub:org/name`, read
    from the local Hugging Face cache only (nothing is downloaded)."""
    scheme, arch = parse_model_name(name)
    if scheme == "hf-hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    elif scheme == "local-dir":
        if not Path(arch).expanduser().is_dir():
            raise ConfigError(f"model.backbone={name!r}: folder {arch} does not exist")
    elif not timm.is_model(name):
        close = timm.list_models(f"*{split_model_name_tag(name)[0].split('_')[0]}*")[:10]
        raise ConfigError(f"unknown backbone model.backbone={name!r}; similar timm names: {', '.join(close) or 'none'}")


def load_own_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load a small-image backbone's weights (e.g. written by `python -m gmsop.export`), naming
    what does not fit: another backbone's file fails here rather than training from noise."""
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as e:  # safetensors and torch raise many types for a bad file
        raise ConfigError(
            f"model.pretrained_file={path} is not a readable weights file ({type(e).__name__}: {e})"
        ) from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here" for k in sorted(wrong)[:5]]
        raise ConfigError(
            f"model.pretrained_file={path} does not fit {name} (in_chans and widths must match): "
            f"{len(missing)} missing tensor(s) {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}; {shapes}"
        )
    model.load_state_dict(state)


def freeze_stages(model: nn.Module, n: int, name: str) -> list[str]:
    """Freeze the first `n` stages of timm's `feature_info` (for ResNets: 1 = the stem, 2 = the
    stem and the first block group, ...) and everything before them: no gradients, and their
    BatchNorm layers keep their statistics (timm's `freeze`). Returns the frozen module names."""
    if n == 0:
        return []
    info = getattr(model, "feature_info", None)
    if not info:
        raise ConfigError(f"model.freeze_stages={n}: {name} does not describe its stages (no timm feature_info)")
    info = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    if not 0 < n <= len(info):
        raise ConfigError(f"model.freeze_stages={n}; {name} has {len(info)} stages: 0 to {len(info)}")
    last = info[n - 1]["module"]
    order = [m for m, _ in model.named_modules()]
    end = max(i for i, m in enumerate(order) if m == last or m.startswith(last + "."))
    leaves = [m for m, module in list(model.named_modules())[: end + 1] if m and not list(module.children())]
    timm.utils.model.freeze(model, leaves)
    return leaves
