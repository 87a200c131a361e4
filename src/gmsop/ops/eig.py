"""Exact matrix power by eigendecomposition (MPN-COV), the reference for iSQRT-COV."""

from __future__ import annotations

import torch

EIG_EPS = 1e-10


class _SymmetricMatrixPower(torch.autograd.Function):
    """f(S) = V diag(max(lambda, eps)^p) V^T with the Daleckii-Krein backward.

    The backward uses the divided differences K_ij = (f_i - f_j) / (l_i - l_j), and f'(l_i)
    where l_i == l_j, so repeated eigenvalues (rank-deficient covariances, M < C) give
    finite gradients, unlike autograd through torch.linalg.eigh.
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor, power: float, eps: float) -> torch.Tensor:
        lam, v = torch.linalg.eigh(s)
        lam = lam.clamp_min(eps)
        f = lam.pow(power)
        ctx.save_for_backward(lam, v, f)
        ctx.power = power
        return (v * f.unsqueeze(-2)) @ v.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lam, v, f = ctx.saved_tensors
        p = ctx.power
        dl = lam.unsqueeze(-1) - lam.unsqueeze(-2)
        df = f.unsqueeze(-1) - f.unsqueeze(-2)
        fprime = p * lam.pow(p - 1)
        # Eigenvalues closer than a relative 1e-9 are treated as equal (use f' there).
        scale = lam.amax(-1)[..., None, None]
        close = dl.abs() <= 1e-9 * scale
        safe_dl = torch.where(close, torch.ones_like(dl), dl)
        k = torch.where(close, 0.5 * (fprime.unsqueeze(-1) + fprime.unsqueeze(-2)), df / safe_dl)
        g = 0.5 * (grad + grad.transpose(-1, -2))
        inner = v.transpose(-1, -2) @ g @ v
        return v @ (k * inner) @ v.transpose(-1, -2), None, None


def matrix_power(s: torch.Tensor, power: float = 0.5, eps: float = EIG_EPS) -> torch.Tensor:
    """S^power for a batch of symmetric PSD matrices; eigenvalues are floored at eps."""
    return _SymmetricMatrixPower.apply(s, power, eps)


def mpncov(s: torch.Tensor, power: float = 0.5, eps: float = EIG_EPS) -> torch.Tensor:
    """MPN-COV: the exact power of the covariance (no trace normalisation is needed)."""
    return matrix_power(s, power, eps)
