"""iSQRT-COV straight from a feature map, on the cheaper side of the covariance.

With M = H*W positions and C channels, the centred covariance S = Xc Xc^T (Xc = C x M,
centred, scaled by 1/sqrt(M)) has rank < M. Every Newton-Schulz output is Y = A q(A) for a
polynomial q (q = Z_J, since Y_j = A Z_j), and by the push-through identity
A q(A) = Xc q(Xc^T Xc / t) Xc^T / t, so when M < C the same result comes from Newton-Schulz
on the M x M Gram matrix G = Xc^T Xc (same trace t):  sqrt(t) Y = Xc Z_J(G / t) Xc^T / sqrt(t).
"""

from __future__ import annotations

from enum import StrEnum

import torch

from gmsop.ops.covariance import require_positions
from gmsop.ops.sqrtm import TRACE_EPS, isqrt, newton_schulz, trace_normalise


class Side(StrEnum):
    """Which side of the covariance Newton-Schulz runs on."""

    auto = "auto"  # the cheaper one: position when M = H*W < C
    channel = "channel"  # the C x C covariance
    position = "position"  # the M x M Gram matrix


SIDES = tuple(Side)


def choose_side(channels: int, positions: int, side: str = "auto") -> str:
    """'position' (M x M Gram) when M < C under "auto", else 'channel' (C x C covariance)."""
    if side not in SIDES:
        raise ValueError(f"side={side!r}; allowed: {', '.join(SIDES)}")
    if side == "auto":
        return "position" if positions < channels else "channel"
    return side


def isqrt_covariance(
    x: torch.Tensor, iterations: int = 3, side: str = "auto", backward: str = "closed_form", eps: float = TRACE_EPS
) -> torch.Tensor:
    """B x C x M (or B x C x H x W) map -> B x C x C iSQRT-COV of its centred covariance.

    Trace normalisation makes A independent of the covariance's scale, so the 1/M is folded into
    the matmul (or the final scale) instead of a pass over a B x C x C buffer; and the result is
    left as the matmuls give it (symmetric to rounding), as `triu_vectorise` reads one triangle.
    """
    if x.dim() == 4:
        x = x.flatten(2)
    c, m = x.shape[-2:]
    require_positions(m)
    xc = x - x.mean(dim=-1, keepdim=True)
    if choose_side(c, m, side) == "channel":
        s = torch.baddbmm(_unused(xc, c, c), xc, xc.mT, beta=0, alpha=1.0 / m)  # (1/M) Xc Xc^T
        return isqrt(s, iterations, eps, backward)
    a, tr = trace_normalise(torch.bmm(xc.mT, xc), eps)  # the Gram matrix of the unscaled Xc: tr = M t
    z = newton_schulz(a, iterations, backward, factor=True)
    # sqrt(t) Y = (Xc/sqrt(M)) Z (Xc/sqrt(M))^T / sqrt(t) = Xc Z Xc^T / sqrt(M tr), scaled on the M x M side
    z = z / (m * tr).sqrt()[:, None, None]
    return torch.bmm(torch.bmm(xc, z), xc.mT)


def _unused(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A B x rows x cols input for baddbmm(beta=0), which ignores it: no memory behind it."""
    return x.new_zeros(()).expand(x.shape[0], rows, cols)
