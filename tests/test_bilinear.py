"""B-CNN and compact bilinear pooling (Tensor Sketch) against explicit formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from gmsop import ops
from gmsop.heads import build_head

F64 = dict(rtol=1e-12, atol=1e-12)


def test_bilinear_is_the_mean_outer_product_over_positions():
    x = torch.rand(2, 5, 3, 4, dtype=torch.float64)
    positions = x.flatten(2)  # B x C x M
    explicit = torch.stack([sum(torch.outer(p, p) for p in positions[b].T) / 12 for b in range(2)])
    torch.testing.assert_close(ops.bilinear(x), explicit.flatten(1), **F64)


def test_signed_sqrt_and_l2_by_hand():
    y = torch.tensor([[4.0, -9.0, 0.0, 36.0]], dtype=torch.float64)
    expected = torch.tensor([[2.0, -3.0, 0.0, 6.0]], dtype=torch.float64) / 7.0  # sqrt(4 + 9 + 36) = 7
    torch.testing.assert_close(ops.signed_sqrt_l2(y, eps=0.0), expected, **F64)


def test_bcnn_head_matches_the_formula_and_its_gradient_checks():
    head = build_head({"name": "bcnn", "eps": 1e-3}, 4).double()
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = ops.bilinear(x)
    expected = torch.sign(y) * torch.sqrt(y.abs() + 1e-3)
    torch.testing.assert_close(head(x).features, expected / expected.norm(dim=1, keepdim=True), **F64)
    assert head.out_dim == 16
    assert gradcheck(lambda t: head(t).features, (x,), eps=1e-6, atol=1e-7)


def _explicit_tensor_sketch(x: torch.Tensor, index: torch.Tensor, sign: torch.Tensor, d: int) -> torch.Tensor:
    """The count sketch of each position's outer product with hash (h1(i) + h2(j)) mod d and sign
    s1(i) s2(j), averaged over positions: what Tensor Sketch computes with FFTs."""
    b, c = x.shape[:2]
    positions = x.flatten(2)
    out = torch.zeros(b, d, dtype=x.dtype)
    for i in range(c):
        for j in range(c):
            bin_ = (index[0, i] + index[1, j]) % d
            out[:, bin_] += sign[0, i] * sign[1, j] * (positions[:, i] * positions[:, j]).mean(-1)
    return out


def test_tensor_sketch_is_the_count_sketch_of_the_outer_product():
    c, d = 6, 16
    index, sign = ops.random_sketch(c, d, seed=3)
    x = torch.randn(2, c, 2, 3, dtype=torch.float64)
    got = ops.tensor_sketch(x, index, sign.double(), d)
    torch.testing.assert_close(got, _explicit_tensor_sketch(x, index, sign.double(), d), rtol=1e-10, atol=1e-10)


def test_tensor_sketch_inner_products_approximate_the_bilinear_kernel():
    """E <psi(x), psi(y)> = <x, y>^2 with variance <= (2 + 3^2)/d ||x||^4 ||y||^4 (Pham & Pagh, 2013).
    At d = 8192 one sketch's standard deviation is at most 0.037 ||x||^2 ||y||^2; the mean over 16
    independent sketches must fall within 4 of its standard deviations (0.037 ||x||^2 ||y||^2)."""
    c, d, sketches = 32, 8192, 16
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(c, generator=g, dtype=torch.float64), torch.rand(c, generator=g, dtype=torch.float64)
    estimates = []
    for seed in range(sketches):
        index, sign = ops.random_sketch(c, d, seed)
        px, py = (ops.tensor_sketch(v.view(1, c, 1), index, sign.double(), d)[0] for v in (x, y))
        estimates.append(float(px @ py))
    scale = float(x.norm() ** 2 * y.norm() ** 2)
    bound = 4 * math.sqrt(11 / d) / math.sqrt(sketches) * scale
    assert abs(sum(estimates) / sketches - float(x @ y) ** 2) <= bound
    # and a single sketch is not the identity: it does vary with the seed
    assert len({round(e, 9) for e in estimates}) == sketches


def test_cbp_head_is_seeded_saved_with_the_weights_and_works_as_a_mixture_component():
    a, b = build_head({"name": "cbp", "dim": 64, "seed": 1}, 8), build_head({"name": "cbp", "dim": 64, "seed": 1}, 8)
    x = torch.rand(3, 8, 4, 4)
    torch.testing.assert_close(a(x).features, b(x).features)
    assert {"index", "sign"} <= set(a.state_dict())  # the sketch travels with checkpoints
    assert a(x).features.norm(dim=1).allclose(torch.ones(3))
    mix = build_head(
        {"name": "mixture", "num_components": 3, "k": 2, "component_pooling": {"name": "cbp", "dim": 32}}, 8
    )
    out = mix(x)
    assert out.features.shape == (3, 32) and torch.isfinite(out.features).all()
    with pytest.raises(ValueError, match="head.dim .* must be >= 2"):
        build_head({"name": "cbp", "dim": 1}, 8)


def test_create_head_builds_any_head_as_a_plain_module_with_checked_options():
    import torchvision

    from gmsop import create_head

    backbone = torch.nn.Sequential(
        *list(torchvision.models.resnet18(num_classes=10).children())[:-2]
    )  # B x 512 x h x w
    head = create_head("isqrt", 512, reduce_dim=32)
    model = torch.nn.Sequential(backbone, head)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.features.shape == (2, head.out_dim) == (2, 32 * 33 // 2) and out.aux_loss.item() == 0.0
    gm = create_head("gmsop", 512, num_components=4, k=2, component_dims=[16, 8], gate_dims=[16, 8])
    assert gm(torch.rand(2, 512, 4, 4)).aux_loss.requires_grad  # the balance loss, to add to the task loss
    with pytest.raises(ValueError, match=r"head\.reduce_dimm"):
        create_head("isqrt", 512, reduce_dimm=32)
