"""Every op against an independent reference: explicit formulas, eigendecompositions, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from gmsop import ops
from tests.conftest import random_spd

torch.manual_seed(0)


# ---- covariance -------------------------------------------------------------------------
def test_covariance_matches_explicit_centring_matrix_formula():
    """S = X^T Ibar X with Ibar = (1/M)(I - (1/M) 1 1^T), built explicitly (the spec's formula)."""
    x = torch.randn(3, 5, 7, dtype=torch.float64)  # B x C x M
    m = x.shape[-1]
    ibar = (torch.eye(m, dtype=x.dtype) - torch.full((m, m), 1.0 / m, dtype=x.dtype)) / m
    expected = x @ ibar @ x.transpose(1, 2)  # (C x M)(M x M)(M x C): X^T Ibar X with X as M x C
    torch.testing.assert_close(ops.covariance(x), expected, rtol=1e-12, atol=1e-12)


def test_covariance_matches_numpy_biased_cov_and_accepts_maps():
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    s = ops.covariance(x)
    for b in range(2):
        ref = np.cov(x[b].flatten(1).numpy(), bias=True)
        np.testing.assert_allclose(s[b].numpy(), ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(s, s.transpose(1, 2))


def test_covariance_rejects_bad_shape():
    with pytest.raises(ValueError, match="B x C x M"):
        ops.covariance(torch.randn(3, 4))


def test_covariance_gradcheck_float64():
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert gradcheck(ops.covariance, (x,), eps=1e-6, atol=1e-7)


# ---- triangular vectorisation ---------------------------------------------------------------
def test_triu_vectorise_hand_computed():
    s = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]]])
    assert ops.triu_vectorise(s).tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]  # no sqrt(2) scaling
    assert ops.triu_dim(3) == 6 and ops.triu_dim(128) == 8256


def test_triu_vectorise_matches_numpy_indices_and_gradcheck():
    s = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    rows, cols = np.triu_indices(5)
    np.testing.assert_array_equal(ops.triu_vectorise(s).detach().numpy(), s.detach().numpy()[:, rows, cols])
    assert gradcheck(ops.triu_vectorise, (s,), eps=1e-6, atol=1e-7)


# ---- trace normalisation and Newton-Schulz ----------------------------------------------------
def test_trace_normalise():
    s = random_spd(3, 4, 0.5, 2.0)
    a, tr = ops.trace_normalise(s)
    torch.testing.assert_close(tr, torch.einsum("bii->b", s), rtol=1e-12, atol=0)
    torch.testing.assert_close(ops.trace(a), torch.ones(3, dtype=s.dtype), rtol=1e-12, atol=1e-12)
    zero_a, zero_tr = ops.trace_normalise(torch.zeros(1, 3, 3))
    assert torch.isfinite(zero_a).all() and zero_tr.item() > 0  # trace floored at eps


def _scalar_newton_schulz(lam: torch.Tensor, iterations: int) -> torch.Tensor:
    """The coupled iteration on eigenvalues alone (Y, Z and A commute, so NS acts per eigenvalue)."""
    y, z = lam.clone(), torch.ones_like(lam)
    for _ in range(iterations):
        t = (3.0 - z * y) / 2.0
        y, z = y * t, t * z
    return y


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_newton_schulz_equals_scalar_map_on_eigendecomposition(iterations):
    """Exact for any iteration count: NS_k(A) = V ns_k(diag lambda) V^T."""
    a, _ = ops.trace_normalise(random_spd(4, 6, 0.2, 3.0, seed=1))
    lam, v = torch.linalg.eigh(a)
    expected = (v * _scalar_newton_schulz(lam, iterations)[:, None, :]) @ v.transpose(1, 2)
    torch.testing.assert_close(ops.newton_schulz(a, iterations), expected, rtol=1e-12, atol=1e-12)


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm(dim=(1, 2)) / ref.norm(dim=(1, 2))).max().item()


def test_isqrt_accuracy_against_eigendecomposition():
    """C=8, eigenvalues in [1, 2], seed 0, float64. Measured relative Frobenius errors:
    3 iterations 0.13, 5 iterations 2.2e-3, 8 iterations 1e-15; bounds sit just above them."""
    s = random_spd(8, 8, 1.0, 2.0, seed=0)
    ref = ops.matrix_power(s, 0.5)
    assert _rel_err(ops.isqrt(s, 3), ref) < 0.14
    assert _rel_err(ops.isqrt(s, 5), ref) < 2.5e-3
    assert _rel_err(ops.isqrt(s, 8), ref) < 1e-12
    # Y^2 ~ S: the result really is a square root, and error shrinks with iterations
    y = ops.isqrt(s, 8)
    torch.testing.assert_close(y @ y, s, rtol=1e-10, atol=1e-10)
    errs = [_rel_err(ops.isqrt(s, k), ref) for k in range(1, 8)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_newton_schulz_rejects_zero_iterations():
    with pytest.raises(ValueError, match="at least 1"):
        ops.newton_schulz(torch.eye(2)[None], 0)
    for backward in ("closed_form", "autograd"):
        with pytest.raises(ValueError, match="at least 1"):
            ops.isqrt(torch.eye(2)[None], 0, backward=backward)


@pytest.mark.parametrize("iterations", [1, 3, 5])
def test_isqrt_gradcheck_float64(iterations):
    s = random_spd(2, 4, 0.5, 2.0, seed=2).requires_grad_(True)
    assert gradcheck(lambda m: ops.isqrt(m, iterations), (s,), eps=1e-6, atol=1e-7)
    # a non-symmetric input too (gradcheck perturbs one entry at a time anyway)
    g = torch.randn(s.shape, generator=torch.Generator().manual_seed(iterations), dtype=s.dtype)
    assert gradcheck(
        lambda m: ops.isqrt(m, iterations), ((s + 0.05 * g).detach().requires_grad_(),), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_isqrt_closed_form_equals_autograd_through_every_step(iterations):
    """The one-Function closed form (trace normalisation, Newton-Schulz, sqrt(trace)) against
    autograd through each step, in float64, with a floored trace in the batch (sample 2: tr < eps,
    where the trace gets no gradient)."""
    noisy = random_spd(2, 5, 0.5, 2.0, seed=iterations)
    noisy = noisy + 0.01 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(1), dtype=noisy.dtype)
    s = torch.cat([noisy, 1e-14 * random_spd(1, 5, 0.5, 2.0, seed=9)]).requires_grad_()  # trace 5e-14 at most
    w = torch.randn(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for backward in ("closed_form", "autograd"):
        out = ops.isqrt(s, iterations, eps=1e-12, backward=backward)
        outs.append(out)
        grads.append(torch.autograd.grad((out * w).sum(), s)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-13)


# ---- exact matrix power (MPN-COV) -----------------------------------------------------------
def test_matrix_power_hand_computed_and_scipy_free_reference():
    d = torch.diag(torch.tensor([4.0, 9.0, 16.0], dtype=torch.float64))[None]
    torch.testing.assert_close(
        ops.matrix_power(d, 0.5), torch.diag(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64))[None]
    )
    s = random_spd(3, 5, 0.3, 4.0, seed=3)
    r = ops.matrix_power(s, 0.5)
    torch.testing.assert_close(r @ r, s, rtol=1e-10, atol=1e-10)


def _sym(m: torch.Tensor) -> torch.Tensor:
    """gradcheck perturbs single entries; eigh reads one triangle, so feed it (M + M^T)/2."""
    return 0.5 * (m + m.transpose(-1, -2))


def test_matrix_power_gradcheck_distinct_eigenvalues():
    s = random_spd(2, 4, 0.5, 3.0, seed=4).requires_grad_(True)
    assert gradcheck(lambda m: ops.matrix_power(_sym(m), 0.5), (s,), eps=1e-6, atol=1e-6)


def test_matrix_power_gradcheck_repeated_eigenvalues():
    """Autograd through eigh is Inf/NaN here; the Daleckii-Krein backward uses f' instead."""
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    s = ((q * torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64)) @ q.T)[None].requires_grad_(True)
    assert gradcheck(lambda m: ops.matrix_power(_sym(m), 0.5), (s,), eps=1e-6, atol=1e-6)


def test_matrix_power_gradient_finite_for_rank_deficient_covariance():
    x = torch.randn(2, 16, 4, requires_grad=True)  # M=4 < C=16: rank 3, many zero eigenvalues
    out = ops.mpncov(ops.covariance(x))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_isqrt_gradient_matches_exact_sqrt_gradient_when_converged():
    """With enough iterations, iSQRT's autograd gradient equals the eigendecomposition's."""
    s1 = random_spd(2, 5, 1.0, 2.0, seed=5).requires_grad_(True)
    s2 = s1.detach().clone().requires_grad_(True)
    w = torch.randn(2, 5, 5, dtype=torch.float64)
    (ops.isqrt(_sym(s1), 12) * w).sum().backward()
    (ops.matrix_power(_sym(s2), 0.5) * w).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-8, atol=1e-10)


# ---- precision -----------------------------------------------------------------------------
def test_float32_math_under_bf16_autocast():
    x = torch.randn(2, 16, 49)

    @ops.float32_math
    def pooled(t):
        assert t.dtype in (torch.float32, torch.float64), "second-order math must not run in 16 bits"
        return ops.triu_vectorise(ops.isqrt(ops.covariance(t), 3))

    ref = pooled(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pooled(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)  # bf16 input/output rounding
    assert pooled(x.double()).dtype == torch.float64
