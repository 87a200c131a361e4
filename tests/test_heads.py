"""Every registered head with every supported config: shapes, out_dim, finite gradients, errors."""

from __future__ import annotations

import pytest
import torch

from gmsop import ops
from gmsop.heads import HEADS, HeadOutput, build_head
from gmsop.registry import ConfigError

C, H, W = 12, 5, 4

HEAD_CONFIGS = [
    {"name": "gap"},
    {"name": "sop"},
    {"name": "sop", "reduce_dim": 6},
    {"name": "isqrt"},
    {"name": "isqrt", "iterations": 1},
    {"name": "isqrt", "iterations": 5, "reduce_dim": 6},
    {"name": "isqrt", "side": "position", "backward": "autograd"},
    {"name": "isqrt", "side": "channel", "backward": "closed_form"},
    {"name": "mpncov"},
    {"name": "mpncov", "power": 0.25, "reduce_dim": 6},
    {"name": "parametric_isqrt", "dims": [8, 5]},
]


@pytest.mark.parametrize("name", HEADS.names())
def test_every_registered_head_builds_from_its_name_and_trains(name):
    """The head contract, for any head in the registry (a new head needs no change here)."""
    head = build_head({"name": name}, C).train()
    x = torch.randn(4, C, H, W, requires_grad=True)
    out = head(x)
    assert isinstance(out, HeadOutput) and out.features.shape == (4, head.out_dim)
    assert out.aux_loss.shape == () and all(v.shape == () for v in out.stats.values())
    assert (out.routing is not None) == (head.num_components > 0)
    if out.routing is not None:
        assert out.routing.selected.shape == out.routing.weight_sum.shape == (head.num_components,)
    (out.features.square().sum() + out.aux_loss).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for n, p in head.named_parameters():  # every parameter gets a (finite) gradient, even if unused this batch
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("cfg", HEAD_CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_head_shapes_out_dim_and_gradients(cfg):
    head = build_head(cfg, C)
    x = torch.randn(3, C, H, W, requires_grad=True)
    out = head(x)
    assert isinstance(out, HeadOutput)
    channels = cfg.get("reduce_dim") or (cfg["dims"][-1] if "dims" in cfg else C)
    expected_dim = ops.triu_dim(channels) if head.second_order else C
    assert head.out_dim == expected_dim and out.features.shape == (3, expected_dim)
    assert out.aux_loss.shape == () and out.aux_loss.item() == 0.0
    (out.features.square().sum() + out.aux_loss).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_isqrt_head_equals_ops_pipeline():
    head = build_head({"name": "isqrt", "iterations": 4}, C).double()
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    expected = ops.triu_vectorise(ops.isqrt(ops.covariance(x), 4))
    torch.testing.assert_close(head(x).features, expected)


def test_gap_head_is_the_mean():
    x = torch.randn(2, C, H, W)
    torch.testing.assert_close(build_head({"name": "gap"}, C)(x).features, x.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["sop", "isqrt", "mpncov"])
def test_second_order_heads_under_bf16_autocast_have_no_nan(name):
    head = build_head({"name": name}, C)
    x = torch.randn(2, C, 3, 3) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16()).features
    assert torch.isfinite(out).all()


def test_head_config_errors_name_the_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"unknown head 'nope'; known heads: .*gap.*isqrt"):
        build_head({"name": "nope"}, C)
    with pytest.raises(
        ConfigError, match=r"head\.iterations: .*'abc'.*allowed keys for head 'isqrt': name, reduce_dim, iterations"
    ):
        build_head({"name": "isqrt", "iterations": "abc"}, C)
    with pytest.raises(ConfigError, match=r"head\.reduce_dim: Key 'reduce_dim' not in"):
        build_head({"name": "gap", "reduce_dim": 4}, C)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        build_head({"name": "isqrt", "iterations": 0}, C)
    with pytest.raises(ValueError, match="B x C x H x W"):
        build_head({"name": "gap"}, C)(torch.randn(2, C))


def test_forwarded_options_come_from_the_base_class_once():
    """gmsop/gmgap/mixture forward **options: their schemas carry the base's keyword-only options."""
    import dataclasses

    shared = {
        "balance": "importance",
        "balance_weight": 100.0,
        "balance_per_image": True,
        "dispatch": "sparse",
        "pool_batching": "auto",
    }
    for name in ("gmsop", "gmgap", "mixture"):
        defaults = {f.name: f.default for f in dataclasses.fields(HEADS.schema(name))}
        assert {k: defaults[k] for k in shared} == shared, name
    assert HEADS.validate({"name": "gmsop", "noise": "component"})["noise"] == "component"
    with pytest.raises(ConfigError, match=r"head\.balance_weight: .*'heavy'"):
        HEADS.validate({"name": "gmgap", "balance_weight": "heavy"})
