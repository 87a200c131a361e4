"""Second-order pooling heads: plain covariance (SOP), iSQRT-COV (SR-SOP) and MPN-COV."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

from gmsop import ops
from gmsop.heads.base import HEADS, PoolingHead
from gmsop.ops import Backward, Side


class ChannelReduction(nn.Sequential):
    """1x1 conv + BN + ReLU before pooling, as in fast-MPN-COV (e.g. 512 -> 256 channels)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def channel_reduction(in_channels: int, reduce_dim: Optional[int]) -> tuple[nn.Module, int]:
    """The optional `reduce_dim` step of a head (ChannelReduction, or nothing) and the channels after it."""
    if reduce_dim is not None and reduce_dim < 1:
        raise ValueError(f"reduce_dim must be a positive channel count or null, got {reduce_dim}")
    return (ChannelReduction(in_channels, reduce_dim) if reduce_dim else nn.Identity()), reduce_dim or in_channels


class CovarianceHead(PoolingHead):
    """Covariance -> `normalise` -> upper triangle. Subclasses choose the normalisation."""

    second_order = True

    def __init__(self, in_channels: int, reduce_dim: Optional[int] = None) -> None:
        super().__init__()
        self.reduce, self.channels = channel_reduction(in_channels, reduce_dim)
        self.covariance_channels = self.channels
        self.out_dim = ops.triu_dim(self.channels)

    def normalise(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return second_order_vector(self.reduce(x), self.normalise)


@ops.float32_math
def second_order_vector(x: torch.Tensor, normalise: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Covariance of the map, normalised, as its upper triangle; computed in float32 or wider."""
    return ops.triu_vectorise(normalise(ops.covariance(x)))


@HEADS.register("sop")
class SOPHead(CovarianceHead):
    """Plain second-order pooling: the centred covariance, no normalisation."""


@HEADS.register("isqrt")
class ISqrtHead(CovarianceHead):
    """SR-SOP / iSQRT-COV: trace pre-normalisation, Newton-Schulz, post-compensation.

    side: "auto" computes on the M x M Gram matrix when positions M = H*W < channels C
    (identical result, far cheaper), "channel"/"position" force one. backward:
    "closed_form" (supplementary Eqs. 9-12) or "autograd" (for checking).
    """

    def __init__(
        self,
        in_channels: int,
        reduce_dim: Optional[int] = None,
        iterations: int = 3,
        side: Side = Side.auto,
        backward: Backward = Backward.closed_form,
    ) -> None:
        super().__init__(in_channels, reduce_dim)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        # Config values are checked against the enums by the registry, naming the key; this
        # converts (and checks) values passed directly from Python.
        self.iterations, self.side, self.backward = iterations, Side(side), Backward(backward)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return isqrt_vector(self.reduce(x), self.iterations, self.side, self.backward)


@ops.float32_math
def isqrt_vector(x: torch.Tensor, iterations: int, side: str, backward: str) -> torch.Tensor:
    """iSQRT-COV of the map, as its upper triangle; computed in float32 or wider."""
    return ops.triu_vectorise(ops.isqrt_covariance(x, iterations, side, backward))


@HEADS.register("mpncov")
class MPNCOVHead(CovarianceHead):
    """MPN-COV: the exact matrix power of the covariance by eigendecomposition."""

    def __init__(self, in_channels: int, reduce_dim: Optional[int] = None, power: float = 0.5) -> None:
        super().__init__(in_channels, reduce_dim)
        self.power = power

    def normalise(self, s: torch.Tensor) -> torch.Tensor:
        return ops.mpncov(s, self.power)
