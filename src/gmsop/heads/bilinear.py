"""Bilinear pooling heads: B-CNN (the full outer product) and compact bilinear pooling (CBP,
Tensor Sketch), both with signed square root and L2 normalisation, as in fast-MPN-COV's
fine-grained comparisons. Both also work as GM-SOP components (head=mixture,
head.component_pooling={name: cbp, dim: 2048})."""

from __future__ import annotations

from typing import Optional

import torch

from gmsop import ops
from gmsop.heads.base import HEADS, PoolingHead
from gmsop.heads.second_order import channel_reduction


@HEADS.register("bcnn")
class BCNNHead(PoolingHead):
    """B-CNN: (1/M) X X^T flattened (C^2-d, not centred), signed square root, L2 normalisation.
    `reduce_dim` adds a 1x1 conv + BN + ReLU first (C^2 grows fast: 512 channels give 262,144)."""

    second_order = True

    def __init__(self, in_channels: int, reduce_dim: Optional[int] = None, eps: float = 1e-8) -> None:
        super().__init__()
        self.reduce, channels = channel_reduction(in_channels, reduce_dim)
        self.eps = eps
        self.out_dim = channels * channels

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return _bcnn_vector(self.reduce(x), self.eps)


@HEADS.register("cbp")
class CBPHead(PoolingHead):
    """Compact bilinear pooling by Tensor Sketch: a `dim`-d sketch of B-CNN's C^2-d vector
    (inner products preserved in expectation), then signed square root and L2 normalisation.
    The count sketches are fixed by `seed` and saved with the weights (buffers)."""

    second_order = True

    def __init__(
        self, in_channels: int, dim: int = 8192, reduce_dim: Optional[int] = None, seed: int = 0, eps: float = 1e-8
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"head.dim (the sketch size) must be >= 2, got {dim}")
        self.reduce, channels = channel_reduction(in_channels, reduce_dim)
        index, sign = ops.random_sketch(channels, dim, seed)
        self.register_buffer("index", index)
        self.register_buffer("sign", sign)
        self.eps, self.out_dim = eps, dim

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return _cbp_vector(self.reduce(x), self.index, self.sign, self.out_dim, self.eps)


@ops.float32_math
def _bcnn_vector(x: torch.Tensor, eps: float) -> torch.Tensor:
    return ops.signed_sqrt_l2(ops.bilinear(x), eps)


@ops.float32_math
def _cbp_vector(x: torch.Tensor, index: torch.Tensor, sign: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    return ops.signed_sqrt_l2(ops.tensor_sketch(x, index, sign.to(x.dtype), dim), eps)
