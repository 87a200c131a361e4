"""The optimiser and its schedule from the optim config: SGD + MultiStepLR (the paper's recipe) or
AdamW + cosine, one parameter group per model part (optim.lr_mult), at optim.lr scaled to the global
batch, with the optional warm-up (gmsop.models.learning_rate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gmsop.config import OptimConfig
from gmsop.models.learning_rate import LearningRate, validate_lr_keys, warmup_scheduler
from gmsop.registry import ConfigError, complete

OPTIMISERS = ("sgd", "adamw")
SCHEDULERS = ("multistep", "cosine", "none")
PARTS = ("backbone", "head", "classifier")  # the model's parts, each with its own learning rate (optim.lr_mult)


def validate_optim(optim: Mapping[str, Any]) -> None:
    """Fail early, naming the key, for an unknown optimiser or scheduler or an out-of-range value."""
    if optim["name"] not in OPTIMISERS:
        raise ConfigError(f"unknown optim.name={optim['name']!r}; allowed: {', '.join(OPTIMISERS)}")
    if optim["scheduler"] not in SCHEDULERS:
        raise ConfigError(f"unknown optim.scheduler={optim['scheduler']!r}; allowed: {', '.join(SCHEDULERS)}")
    validate_lr_keys(optim)
    unknown = set(optim["lr_mult"]) - set(PARTS)
    if unknown:
        raise ConfigError(f"optim.lr_mult has unknown part(s) {sorted(unknown)}; allowed: {', '.join(PARTS)}")
    for key, ok, allowed in (
        ("lr", optim["lr"] >= 0, ">= 0"),
        ("weight_decay", optim["weight_decay"] >= 0, ">= 0"),
        ("momentum", 0 <= optim["momentum"] < 1, "in [0, 1)"),
        ("gamma", optim["gamma"] > 0, "> 0"),
        ("lr_mult", all(m >= 0 for m in optim["lr_mult"].values()), "multipliers >= 0"),
    ):
        if not ok:
            raise ConfigError(f"optim.{key}={optim[key]!r}; allowed: {allowed}")


def param_groups(parts: Mapping[str, nn.Module], optim: Mapping[str, Any], rate: float) -> list[dict[str, Any]]:
    """One optimiser group per part (backbone, head, classifier) at rate * optim.lr_mult[part]; with
    optim.no_decay_bn_bias, each part's 1-d parameters (BatchNorm weights, biases) get their own
    group without weight decay. Frozen parameters are left out."""
    groups = []
    for name, module in parts.items():
        params = [p for p in module.parameters() if p.requires_grad]
        lr = rate * optim["lr_mult"].get(name, 1.0)
        exempt = [optim["no_decay_bn_bias"] and p.ndim <= 1 for p in params]
        no_decay = [p for p, e in zip(params, exempt) if e]
        decay = [p for p, e in zip(params, exempt) if not e]
        groups += [{"name": name, "params": decay, "lr": lr}] if decay else []
        groups += [{"name": f"{name}/no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}] if no_decay else []
    return groups


def complete_optim(optim: Mapping[str, Any]) -> dict[str, Any]:
    """An optim mapping with the schema's defaults filled in, checked."""
    optim = complete(OptimConfig, optim, "optim", "the optimiser")
    validate_optim(optim)
    return optim


def build_optimiser(params, optim: Mapping[str, Any], max_epochs: int, lr: LearningRate, steps_per_epoch: int = 0):
    """SGD + MultiStepLR (the paper's recipe) or AdamW + cosine, at `lr.rate` (optim.lr scaled to the
    global batch: gmsop.models.learning_rate); the schedule steps per epoch, an optional warm-up per step.
    `params`: parameters (one group), or {part name: module} for per-part groups (`param_groups`)."""
    optim = complete_optim(optim)
    rate = lr.rate
    if isinstance(params, Mapping):
        params = param_groups(params, optim, rate)
    if optim["name"] == "sgd":
        opt = torch.optim.SGD(
            params,
            lr=rate,
            momentum=optim["momentum"],
            nesterov=optim["nesterov"],
            weight_decay=optim["weight_decay"],
        )
    else:
        opt = torch.optim.AdamW(params, lr=rate, weight_decay=optim["weight_decay"])
    schedules = []
    if optim["scheduler"] == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(optim["milestones"]), gamma=optim["gamma"])
        schedules.append({"scheduler": sched, "interval": "epoch"})
    elif optim["scheduler"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs), eta_min=optim["min_lr"])
        schedules.append({"scheduler": sched, "interval": "epoch"})
    warmup = warmup_scheduler(opt, optim, steps_per_epoch)  # after the epoch schedule: it multiplies into it
    if warmup is not None:
        schedules.append({"scheduler": warmup, "interval": "step", "name": "warmup"})
    if not schedules:
        return opt
    if len(schedules) == 1:
        return {"optimizer": opt, "lr_scheduler": schedules[0]}
    return [opt], schedules
