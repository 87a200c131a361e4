"""Matrix square root by coupled Newton-Schulz iteration (iSQRT-COV, SR-SOP).

Two backward passes, chosen by `backward=`: "autograd" through the iterations, or
"closed_form", the matrix back-propagation of supplementary Eqs. 9-12 in one
`torch.autograd.Function` (they agree to float64 gradcheck precision).
"""

from __future__ import annotations

from enum import StrEnum

import torch

TRACE_EPS = 1e-12


class Backward(StrEnum):
    """How the Newton-Schulz square root is differentiated."""

    closed_form = "closed_form"  # supplementary Eqs. 9-12, one fused autograd.Function
    autograd = "autograd"  # through the iterations (for checking)


BACKWARDS = tuple(Backward)


def trace(s: torch.Tensor) -> torch.Tensor:
    """Batched trace, B x C x C -> B."""
    return s.diagonal(dim1=-2, dim2=-1).sum(-1)


def trace_normalise(s: torch.Tensor, eps: float = TRACE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-normalisation A = S / tr(S); returns (A, tr(S)). The trace is floored at eps."""
    tr = trace(s).clamp_min(eps)
    return s / tr[:, None, None], tr


def _check_iterations(iterations: int) -> None:
    if iterations < 1:
        raise ValueError(f"Newton-Schulz needs at least 1 iteration, got {iterations}")


def _t(p: torch.Tensor) -> torch.Tensor:
    """T = 1.5 I - 0.5 P, in one pass over P."""
    t = p.mul(-0.5)
    t.diagonal(dim1=-2, dim2=-1).add_(1.5)
    return t


def _newton_schulz_autograd(a: torch.Tensor, iterations: int, factor: bool) -> torch.Tensor:
    y, z = a, None
    for i in range(iterations):
        zy = y if z is None else torch.bmm(z, y)
        t = _t(zy)
        if i == iterations - 1:
            if factor:
                return t if z is None else torch.bmm(t, z)
            return torch.bmm(y, t)
        y, z = torch.bmm(y, t), (t if z is None else torch.bmm(t, z))
    raise AssertionError("unreachable")


def _ns_forward(a: torch.Tensor, iterations: int, factor: bool) -> tuple[torch.Tensor, tuple]:
    """Newton-Schulz forward for the closed form: the output and what its backward needs."""
    ys, zs, ps = [a], [None], []
    for i in range(iterations):
        y, z = ys[-1], zs[-1]
        p = y if z is None else torch.bmm(z, y)
        ps.append(p)
        last = i == iterations - 1
        # 1.5 Y - 0.5 Y P rather than Y T: forming T first costs float32 accuracy (the output
        # drifts 2-5x further from float64; tests/test_fast_isqrt.py)
        if not last or not factor:
            ys.append(torch.baddbmm(y, y, p, beta=1.5, alpha=-0.5))
        if not last or factor:
            zs.append(_t(p) if z is None else torch.baddbmm(z, p, z, beta=1.5, alpha=-0.5))
    return (zs[-1] if factor else ys[-1]), (*ys[:iterations], *zs[1:iterations], *ps)


def _ns_backward(saved: tuple, grad: torch.Tensor, iterations: int, factor: bool) -> torch.Tensor:
    """The closed-form backward (see _NewtonSchulzClosedForm): dL/dA from dL/d(output)."""
    n = iterations
    ys, zs, ps = saved[:n], (None, *saved[n : 2 * n - 1]), saved[2 * n - 1 :]
    d_y, d_z = (None, grad) if factor else (grad, None)  # (grad itself is never written to)
    for j in range(n, 0, -1):
        y, z, p = ys[j - 1], zs[j - 1], ps[j - 1]
        if d_y is None:
            d_t = d_z if z is None else torch.bmm(d_z, z.mT)
        elif d_z is None:
            d_t = torch.bmm(y.mT, d_y)
        else:  # (only for j < n, where d_z is this backward's own buffer)
            d_t = (d_z if z is None else torch.bmm(d_z, z.mT)).baddbmm_(y.mT, d_y)
        if z is None:  # j = 1: Z_0 = I, so Z^T dT = dT and there is no dZ_0
            return -0.5 * d_t if d_y is None else torch.bmm(d_y, _t(p).mT).add_(d_t, alpha=-0.5)
        t = _t(p)
        new_dy = (
            torch.bmm(z.mT, d_t).mul_(-0.5) if d_y is None else torch.bmm(d_y, t.mT).baddbmm_(z.mT, d_t, alpha=-0.5)
        )
        new_dz = (
            torch.bmm(d_t, y.mT).mul_(-0.5) if d_z is None else torch.bmm(t.mT, d_z).baddbmm_(d_t, y.mT, alpha=-0.5)
        )
        d_y, d_z = new_dy, new_dz
    raise AssertionError("unreachable")


class _NewtonSchulzClosedForm(torch.autograd.Function):
    """Coupled Newton-Schulz with the closed-form backward (supplementary Eqs. 10-11).

    Iteration j: P = Z Y, T = (3I - P)/2, Y <- Y T = 1.5 Y - 0.5 Y P, Z <- T Z =
    1.5 Z - 0.5 P Z, from Y0 = A, Z0 = I. Backward, for any upstream gradient (no symmetry
    assumed):
        dT = Y^T dY + dZ Z^T
        dY_{j-1} = dY T^T - 0.5 Z^T dT
        dZ_{j-1} = T^T dZ - 0.5 dT Y^T
    with Z_0 = I constant. Each backward step is one matmul plus one accumulated in place
    (baddbmm_), so no B x C x C buffer is copied: on a CPU such copies and fresh buffers cost
    about as much as the matmuls at C = 128. Output: Y_J (~A^(1/2)) or, with factor=True,
    Z_J (~A^(-1/2), the polynomial with Y_J = A Z_J, used by the small-side path).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, iterations: int, factor: bool) -> torch.Tensor:
        out, saved = _ns_forward(a, iterations, factor)
        ctx.factor, ctx.iterations = factor, iterations
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _ns_backward(ctx.saved_tensors, grad, ctx.iterations, ctx.factor), None, None


class _ISqrtClosedForm(torch.autograd.Function):
    """iSQRT in one Function: A = S / t (t = tr S, floored at eps), Y = NS(A), out = sqrt(t) Y.

    Backward (Eqs. 9 and 12 with the Newton-Schulz closed form), g = dL/d(out):
        dA = NS'(sqrt(t) g),  dt = <g, Y> / (2 sqrt(t)) - <dA, A> / t  (0 where t was floored),
        dS = dA / t + dt I.
    As autograd would do it, the same takes about twice as many passes over B x C x C buffers.
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor, iterations: int, eps: float) -> torch.Tensor:
        raw = trace(s)
        tr = raw.clamp_min(eps)[:, None, None]
        a = s / tr
        y, saved = _ns_forward(a, iterations, False)
        root = tr.sqrt()
        out = y.mul_(root)
        ctx.iterations = iterations
        ctx.save_for_backward(out, tr, (raw >= eps)[:, None, None], *saved)  # saved[0] is A
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out, tr, live, *saved = ctx.saved_tensors
        root = tr.sqrt()
        d_a = _ns_backward(tuple(saved), grad * root, ctx.iterations, False)
        g_y = torch.linalg.vecdot(grad.flatten(1), out.flatten(1))[:, None, None] / root  # <g, Y>
        g_a = torch.linalg.vecdot(d_a.flatten(1), saved[0].flatten(1))[:, None, None]  # <dA, A>
        d_t = (g_y / (2 * root) - g_a / tr) * live
        d_s = d_a.div_(tr)
        d_s.diagonal(dim1=-2, dim2=-1).add_(d_t[:, :, 0])
        return d_s, None, None


def newton_schulz(
    a: torch.Tensor, iterations: int, backward: str = "closed_form", factor: bool = False
) -> torch.Tensor:
    """Coupled Newton-Schulz: Y ~ A^(1/2) (or, factor=True, Z ~ A^(-1/2) with Y = A Z).

    For a batch of symmetric matrices with ||I - A|| < 1 (e.g. trace-normalised SPD).
    Y0 = A, Z0 = I; T = (3I - Z Y)/2; Y <- Y T; Z <- T Z (supplementary Eq. 8); the last
    iteration updates only the output.
    """
    _check_iterations(iterations)
    if backward == "autograd":
        return _newton_schulz_autograd(a, iterations, factor)
    if backward == "closed_form":
        return _NewtonSchulzClosedForm.apply(a, iterations, factor)
    raise ValueError(f"backward={backward!r}; allowed: {', '.join(BACKWARDS)}")


def isqrt(s: torch.Tensor, iterations: int = 3, eps: float = TRACE_EPS, backward: str = "closed_form") -> torch.Tensor:
    """iSQRT-COV: pre-normalise by the trace, Newton-Schulz, post-compensate by sqrt(tr S).

    With backward="closed_form" all three are one Function (_ISqrtClosedForm); with "autograd"
    autograd differentiates each step.
    """
    if backward == "closed_form":
        _check_iterations(iterations)
        return _ISqrtClosedForm.apply(s, iterations, eps)
    a, tr = trace_normalise(s, eps)
    y = newton_schulz(a, iterations, backward)
    return y * tr.sqrt()[:, None, None]
