"""Closed-form backward and small-side iSQRT against autograd and the C-side path."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from gmsop import ops
from gmsop.heads import build_head
from tests.conftest import random_spd


def _near_spd(seed: int, c: int = 5) -> torch.Tensor:
    """Trace-normalised SPD plus a small non-symmetric part (gradcheck perturbs any entry)."""
    a, _ = ops.trace_normalise(random_spd(2, c, 0.5, 2.0, seed=seed))
    return a + 0.01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(seed), dtype=a.dtype)


@pytest.mark.parametrize("factor", [False, True], ids=["sqrt", "factor"])
@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_closed_form_backward_gradcheck_and_equals_autograd(iterations, factor):
    a = _near_spd(iterations).requires_grad_(True)
    assert gradcheck(lambda m: ops.newton_schulz(m, iterations, "closed_form", factor), (a,), eps=1e-6, atol=1e-7)
    w = torch.randn(2, 5, 5, dtype=torch.float64)
    outs, grads = [], []
    for backward in ("closed_form", "autograd"):
        out = ops.newton_schulz(a, iterations, backward, factor)
        (g,) = torch.autograd.grad((out * w).sum(), a)
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-13)


def test_factor_is_the_inverse_square_root_polynomial():
    """Y_J = A Z_J exactly, and Z_J -> A^(-1/2) as iterations grow."""
    a, _ = ops.trace_normalise(random_spd(3, 6, 1.0, 2.0, seed=7))
    for it in (1, 3, 5):
        torch.testing.assert_close(
            ops.newton_schulz(a, it), a @ ops.newton_schulz(a, it, factor=True), rtol=1e-12, atol=1e-13
        )
    torch.testing.assert_close(ops.newton_schulz(a, 12, factor=True), ops.matrix_power(a, -0.5), rtol=1e-10, atol=1e-10)


def test_unknown_backward_is_an_error():
    with pytest.raises(ValueError, match="backward='fast'; allowed: closed_form, autograd"):
        ops.newton_schulz(torch.eye(3)[None], 3, "fast")


@pytest.mark.parametrize("iterations", [1, 3, 5])
@pytest.mark.parametrize("c,m", [(12, 5), (9, 9), (6, 10)])
def test_small_side_equals_channel_side_float64(c, m, iterations):
    x = torch.randn(3, c, m, dtype=torch.float64)
    small = ops.isqrt_covariance(x, iterations, side="position")
    big = ops.isqrt_covariance(x, iterations, side="channel")
    torch.testing.assert_close(small, big, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(big, ops.isqrt(ops.covariance(x), iterations))


def test_small_side_equals_channel_side_within_float32_rounding():
    """Measured relative Frobenius differences: 1.1e-7 to 3.1e-7 (float32 eps 1.2e-7)."""
    torch.manual_seed(0)
    for c, m in ((64, 16), (256, 64), (256, 196)):
        x = torch.randn(4, c, m)
        ref = ops.isqrt_covariance(x.double(), 3, "channel")
        for side in ("position", "channel"):
            out = ops.isqrt_covariance(x, 3, side).double()
            assert ((out - ref).norm() / ref.norm()).item() < 1e-6, (c, m, side)


def test_small_side_gradcheck_both_backwards():
    x = torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True)
    for backward in ("closed_form", "autograd"):
        assert gradcheck(
            lambda t, backward=backward: ops.isqrt_covariance(t, 3, "position", backward), (x,), eps=1e-6, atol=1e-7
        )
    g = [torch.autograd.grad(ops.isqrt_covariance(x, 3, side).square().sum(), x)[0] for side in ("position", "channel")]
    torch.testing.assert_close(g[0], g[1], rtol=1e-10, atol=1e-12)


def test_side_choice():
    assert ops.choose_side(256, 64) == "position" and ops.choose_side(128, 256) == "channel"
    assert ops.choose_side(128, 128) == "channel" and ops.choose_side(256, 64, "channel") == "channel"
    with pytest.raises(ValueError, match="side='gram'"):
        ops.choose_side(4, 4, "gram")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["sop", "isqrt", "mpncov", "gmsop"])
def test_mixed_precision_runs_second_order_math_in_float32(name, dtype):
    """Under autocast the result is cast back to the input dtype, and finite wherever float32 is."""
    cfg = {"name": name}
    if name == "gmsop":
        cfg.update(num_components=4, k=2, component_dims=[16, 8], gate_dims=[16, 8])
    torch.manual_seed(0)
    head = build_head(cfg, 24).eval()
    x = torch.randn(3, 24, 6, 6) * 30  # large activations: 16-bit Newton-Schulz would overflow/NaN
    ref = head(x).features
    assert torch.isfinite(ref).all()
    with torch.autocast("cpu", dtype=dtype):
        out = head(x.to(dtype)).features
    assert torch.isfinite(out).all()
    if name != "gmsop":
        assert out.dtype == dtype
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 2e-2, f"{name} under {dtype}: relative error {rel}"
