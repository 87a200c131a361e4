"""Centred covariance pooling of a feature map."""

from __future__ import annotations

import torch


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Centred covariance S = (1/M) (X - mean)^T (X - mean) of a B x C x M (or B x C x H x W) map.

    Centres by subtracting the per-channel mean rather than multiplying by the M x M
    centring matrix Ibar (the same result, without an M x M buffer). Returns a symmetric
    B x C x C tensor in the input's dtype.
    """
    if x.dim() == 4:
        x = x.flatten(2)
    if x.dim() != 3:
        raise ValueError(f"covariance expects B x C x M or B x C x H x W, got shape {tuple(x.shape)}")
    m = x.shape[-1]
    require_positions(m)
    xc = x - x.mean(dim=-1, keepdim=True)
    s = torch.bmm(xc, xc.transpose(1, 2)) / m
    return 0.5 * (s + s.transpose(1, 2))


def require_positions(m: int) -> None:
    """A covariance needs at least 2 positions (one gives the zero matrix, and iSQRT then divides by 0)."""
    if m < 2:
        raise ValueError(
            f"second-order pooling needs a map with at least 2 positions, got {m}: feed it a larger map "
            "(a larger data.image_size, model.output_stride=16, or model.last_stride=1)"
        )
