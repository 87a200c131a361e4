"""Matrix square root by coupled Newton-Schulz iteration (iSQRT-COV, SR-SOP)."""

from __future__ import annotations

import torch

TRACE_EPS = 1e-12


def trace(s: torch.Tensor) -> torch.Tensor:
    """Batched trace, B x C x C -> B."""
    return s.diagonal(dim1=-2, dim2=-1).sum(-1)


def trace_normalise(s: torch.Tensor, eps: float = TRACE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-normalisation A = S / tr(S); returns (A, tr(S)). The trace is floored at eps."""
    tr = trace(s).clamp_min(eps)
    return s / tr[:, None, None], tr


def newton_schulz(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Coupled Newton-Schulz iteration Y ~ A^(1/2) for a batch of SPD matrices with ||I - A|| < 1.

    Y0 = A, Z0 = I; T = (3I - Z Y)/2; Y <- Y T; Z <- T Z (supplementary Eq. 8). The last
    iteration updates Y only.
    """
    if iterations < 1:
        raise ValueError(f"Newton-Schulz needs at least 1 iteration, got {iterations}")
    c = a.shape[-1]
    eye15 = 1.5 * torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    y = a
    z = None
    for i in range(iterations):
        zy = y if z is None else torch.bmm(z, y)
        t = eye15 - 0.5 * zy
        if i == iterations - 1:
            return torch.bmm(y, t)
        y, z = torch.bmm(y, t), (t if z is None else torch.bmm(t, z))
    raise AssertionError("unreachable")


def isqrt(s: torch.Tensor, iterations: int = 3, eps: float = TRACE_EPS) -> torch.Tensor:
    """iSQRT-COV: pre-normalise by the trace, Newton-Schulz, post-compensate by sqrt(tr S)."""
    a, tr = trace_normalise(s, eps)
    y = newton_schulz(a, iterations)
    return y * tr.sqrt()[:, None, None]
