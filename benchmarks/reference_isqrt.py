"""A straightforward iSQRT-COV, the baseline the iSQRT head is timed against in section (b).

The same math as the `isqrt` head, written plainly the way public implementations do it:
covariance through the centring matrix (X I_hat X^T, I_hat = (I - 1/M) / M), trace
normalisation, coupled Newton-Schulz iterations differentiated by autograd, always on the
C x C side, then the upper triangle scaled back by sqrt(trace).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Output(NamedTuple):
    features: torch.Tensor
    aux_loss: torch.Tensor


class StraightforwardISqrt(nn.Module):
    def __init__(self, iterations: int = 3) -> None:
        super().__init__()
        if iterations < 2:
            raise ValueError(f"iterations must be >= 2, got {iterations}")
        self.iterations = iterations

    def forward(self, x: torch.Tensor) -> Output:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        m = x.shape[-1]
        i_hat = (torch.eye(m, dtype=x.dtype, device=x.device) - 1.0 / m) / m
        cov = x.bmm(i_hat.expand(b, m, m)).bmm(x.transpose(1, 2))
        eye3 = 3.0 * torch.eye(c, dtype=x.dtype, device=x.device).expand(b, c, c)
        trace = cov.diagonal(dim1=1, dim2=2).sum(1).view(b, 1, 1)
        a = cov / trace
        zy = 0.5 * (eye3 - a)
        y, z = a.bmm(zy), zy
        for _ in range(self.iterations - 2):
            zy = 0.5 * (eye3 - z.bmm(y))
            y, z = y.bmm(zy), zy.bmm(z)
        y = 0.5 * y.bmm(eye3 - z.bmm(y)) * trace.sqrt()
        rows, cols = torch.triu_indices(c, c, device=x.device)
        return Output(y[:, rows, cols], x.new_zeros(()))
