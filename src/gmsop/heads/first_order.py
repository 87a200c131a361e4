"""First-order pooling: global average pooling."""

from __future__ import annotations

import torch

from gmsop.heads.base import HEADS, PoolingHead


@HEADS.register("gap")
class GAPHead(PoolingHead):
    """Global average pooling: the mean over positions, C-dimensional."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_dim = in_channels

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
