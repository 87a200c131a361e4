"""The one pooling-head interface: B x C x H x W feature map -> B x out_dim vector."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn

from gmsop.registry import Registry


@dataclass
class Routing:
    """How a gated head routed one batch (detached; for monitoring, not for the loss).

    selected: N, how many images selected each component (sums to K x batch).
    weight_sum: N, the sum of those images' gate weights for the component.
    """

    selected: torch.Tensor
    weight_sum: torch.Tensor


class HeadOutput(NamedTuple):
    """What every head returns.

    features: B x out_dim pooled representation.
    aux_loss: scalar added to the classification loss (zero for heads without one).
    stats: detached scalars worth logging (e.g. the balance loss); may be empty.
    routing: for heads that route images to components (`num_components` > 0), else None.
    """

    features: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    routing: Optional[Routing] = None


class PoolingHead(nn.Module, ABC):
    """Base class: subclasses set `out_dim` and implement `pool`.

    `second_order` tells the model factory that the backbone should keep its last stage at
    full resolution (the paper removes the last downsampling for second-order heads).

    `classifier_bn` is the head's default for model.bn (BatchNorm1d on the pooled vector before the
    classifier), as the release builds each network: BN after a mixture's fusion, none for the
    baselines. It matters most for high-dimensional outputs: BN gives each of SR-SOP's 8,256
    dimensions unit variance, so one SGD step moves the logits in proportion to the dimension (on
    Fashion-MNIST at the default rate, SR-SOP ended 5 points behind without BN's help; GM-SOP without
    BN did not train: docs/results/defaults_new_data).
    """

    out_dim: int
    second_order: bool = False
    classifier_bn: bool = False
    num_components: int = 0  # components a gated head routes images to (its HeadOutput.routing); 0: none
    covariance_channels: Optional[int] = None  # the channels of the covariance it pools (second-order heads)

    def largest_covariance(self) -> Optional[int]:
        """The channels of the largest covariance this head or a head inside it (a mixture's
        components, its gate's pooling) takes; None for first-order heads. A covariance of M positions
        has rank at most M - 1: below that many channels plus one, the map is too small for it."""
        sizes = [m.covariance_channels for m in self.modules() if isinstance(m, PoolingHead) and m.covariance_channels]
        return max(sizes, default=None)

    @abstractmethod
    def pool(self, x: torch.Tensor) -> torch.Tensor | HeadOutput:
        """B x C x H x W -> B x out_dim features, or a full HeadOutput (aux loss, stats)."""

    def forward(self, x: torch.Tensor) -> HeadOutput:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a B x C x H x W map, got shape {tuple(x.shape)}")
        out = self.pool(x)
        if isinstance(out, HeadOutput):
            return out
        return HeadOutput(out, out.new_zeros(()), {})


HEADS: Registry[PoolingHead] = Registry("head", fixed_args=("in_channels",))


def build_head(cfg, in_channels: int, path: str = "head") -> PoolingHead:
    """Build a registered head from a config mapping with a `name` key; errors name `path`.key."""
    return HEADS.build(cfg, in_channels, path=path)
