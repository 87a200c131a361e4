"""The one pooling-head interface: B x C x H x W feature map -> B x out_dim vector."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from gmsop.registry import Registry


class HeadOutput(NamedTuple):
    """What every head returns.

    features: B x out_dim pooled representation.
    aux_loss: scalar added to the classification loss (zero for heads without one).
    stats: detached scalars/vectors worth logging (e.g. component usage); may be empty.
    """

    features: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor]


class PoolingHead(nn.Module, ABC):
    """Base class: subclasses set `out_dim` and implement `pool`.

    `second_order` tells the model factory that the backbone should keep its last stage at
    full resolution (the paper removes the last downsampling for second-order heads).
    """

    out_dim: int
    second_order: bool = False

    @abstractmethod
    def pool(self, x: torch.Tensor) -> torch.Tensor | HeadOutput:
        """B x C x H x W -> B x out_dim features, or a full HeadOutput (aux loss, stats)."""

    def callbacks(self) -> list:
        """Lightning callbacks this head wants during training (e.g. component usage); none by default."""
        return []

    def forward(self, x: torch.Tensor) -> HeadOutput:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a B x C x H x W map, got shape {tuple(x.shape)}")
        out = self.pool(x)
        if isinstance(out, HeadOutput):
            return out
        return HeadOutput(out, out.new_zeros(()), {})


HEADS: Registry[PoolingHead] = Registry("head", fixed_args=("in_channels",))


def build_head(cfg, in_channels: int) -> PoolingHead:
    """Build a registered head from a config mapping with a `name` key."""
    return HEADS.build(cfg, in_channels, path="head")
