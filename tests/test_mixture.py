"""GM-SOP / GM-GAP: gating, top-K softmax, balance loss, sparse dispatch vs a dense reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from gmsop import ops
from gmsop.heads import build_head
from gmsop.heads.gating import NoisyTopKGate, top_k
from gmsop.heads.mixture import GatedMixtureHead

SMALL = {"num_components": 5, "k": 3, "component_dims": [6, 4], "gate_dims": [6, 4]}


def _small(name: str, **kw) -> torch.nn.Module:
    cfg = {"name": name, **SMALL, **kw}
    if name == "gmgap":
        cfg["component_dims"] = [6]
    return build_head(cfg, 7)


def _randomise_gate(head) -> None:
    """Break the uniform initialisation so different images route differently."""
    g = torch.Generator().manual_seed(1)
    for w in (head.gate.w_gate.weight, head.gate.w_noise.weight):
        w.data = torch.randn(w.shape, generator=g, dtype=w.dtype)


# ---- top-K and softmax over the selected --------------------------------------------------
def test_top_k_hand_made_case():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0], [5.0, -1.0, 4.0, 4.5]])
    assert top_k(scores, 2, random_ties=False).tolist() == [[1, 2], [0, 3]]
    assert top_k(scores, 2, random_ties=True).sort(-1).values.tolist() == [[1, 2], [0, 3]]
    distinct = torch.randn(50, 16, dtype=torch.float64)
    assert torch.equal(top_k(distinct, 5, random_ties=False), distinct.topk(5).indices)


def test_gate_softmax_over_selected_scores_only():
    """GAP gating on a constant map with Wg = I: the scores are the channel values."""
    gate = NoisyTopKGate(4, 4, 2, trunk_dims=[], pooling={"name": "gap"}, noise="none").double().eval()
    gate.w_gate.weight.data = torch.eye(4, dtype=torch.float64)
    x = torch.tensor([1.0, 3.0, 2.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1).expand(1, 4, 3, 3)
    g = gate(x)
    assert sorted(g.indices[0].tolist()) == [1, 2]
    e = math.e
    expected = torch.tensor([[0.0, e / (e + 1), 1 / (e + 1), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(g.dense, expected, rtol=1e-12, atol=1e-12)
    assert g.weights.sum().item() == pytest.approx(1.0)


def test_uniform_init_ties_yield_exactly_k_distinct_random_components():
    head = build_head({"name": "gmsop", "num_components": 16, "k": 8, "component_dims": [6, 4], "gate_dims": [6, 4]}, 7)
    assert torch.all(head.gate.w_gate.weight == head.gate.w_gate.weight[0, 0])  # ones/size
    torch.manual_seed(0)
    g = head.gate(torch.randn(32, 7, 3, 3))
    for row in g.indices:
        assert len(set(row.tolist())) == 8
    assert len({tuple(sorted(r.tolist())) for r in g.indices}) > 1  # ties broken randomly, not by index
    assert ((g.dense > 0).sum(1) == 8).all()


def test_noise_one_scalar_per_image_or_per_component():
    for noise in ("image", "component"):
        gate = NoisyTopKGate(7, 5, 2, trunk_dims=[4], pooling={"name": "gap"}, noise=noise)
        torch.nn.init.normal_(gate.w_noise.weight)
        g = gate(torch.randn(6, 7, 3, 3))
        ratio = (g.noisy - g.clean) / g.noise_std
        per_image_constant = torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
        assert per_image_constant == (noise == "image")


# ---- balance loss ---------------------------------------------------------------------------
def test_cv_squared_hand_computed():
    dense = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4]], dtype=torch.float64)
    imp = ops.importance(dense)
    torch.testing.assert_close(imp, torch.tensor([0.7, 0.9, 0.4], dtype=torch.float64))
    # mean 2/3; squared deviations 1/900, 49/900, 64/900 -> var (N-1) = 114/1800; cv^2 = var / (4/9)
    expected = (114 / 1800) / (4 / 9)
    assert ops.cv_squared(imp).item() == pytest.approx(expected, rel=1e-9)
    assert ops.cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0.0


def test_cv_squared_gradient_closed_form_and_gradcheck():
    imp = torch.tensor([0.7, 0.9, 0.4, 1.3], dtype=torch.float64, requires_grad=True)
    ops.cv_squared(imp).backward()
    v, n = imp.detach(), 4
    mean, var = v.mean(), v.var(unbiased=True)
    closed = 2 * (v - mean) / ((n - 1) * mean**2) - 2 * var / (n * mean**3)
    torch.testing.assert_close(imp.grad, closed, rtol=1e-6, atol=1e-9)
    dense = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda d: ops.cv_squared(ops.importance(d), eps=0.0), (dense,), eps=1e-6, atol=1e-7)


def test_head_balance_loss_is_weight_over_batch_times_cv2():
    head = _small("gmsop", balance_weight=100.0).double().eval()
    _randomise_gate(head)
    x = torch.randn(6, 7, 4, 4, dtype=torch.float64)
    out = head(x)
    gates = head.gate(x)
    expected = 100.0 / 6 * ops.cv_squared(ops.importance(gates.dense))
    torch.testing.assert_close(out.aux_loss, expected.to(out.aux_loss.dtype))
    head_total = _small("gmsop", balance_weight=100.0, balance_per_image=False).double().eval()
    head_total.load_state_dict(head.state_dict())
    torch.testing.assert_close(head_total(x).aux_loss, expected * 6)


def test_load_estimate_hand_computed():
    clean = torch.tensor([[0.0, 1.0, 2.0]])
    noisy = torch.tensor([[0.5, 1.0, 2.0]])
    load = ops.load_estimate(clean, noisy, torch.ones(1, 3), k=1)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    # component 2 is selected: its threshold is the 2nd largest (1.0); the others face 2.0
    torch.testing.assert_close(load, torch.tensor([phi(-2.0), phi(-1.0), phi(1.0)]))


def test_load_balance_variant_has_gradient_to_noise_weights():
    head = _small("gmsop", balance="load", noise="component").train()
    _randomise_gate(head)
    out = head(torch.randn(8, 7, 4, 4))
    out.aux_loss.backward()
    assert head.gate.w_noise.weight.grad.abs().sum() > 0


# ---- sparse dispatch against the dense reference ----------------------------------------------
@pytest.mark.parametrize("batching", ["always", "never"])
@pytest.mark.parametrize("name", ["gmsop", "gmgap"])
def test_sparse_dispatch_equals_dense_in_outputs_and_every_gradient(name, batching):
    sparse = _small(name, dispatch="sparse", pool_batching=batching).double().train()
    _randomise_gate(sparse)
    dense = _small(name, dispatch="dense", pool_batching=batching).double().train()
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(9, 7, 4, 4, dtype=torch.float64)
    w = torch.randn(9, sparse.out_dim, dtype=torch.float64)
    results = []
    for head in (sparse, dense):
        torch.manual_seed(3)  # the same noise and tie-breaks for both
        xi = x.clone().requires_grad_(True)
        out = head(xi)
        ((out.features * w).sum() + out.aux_loss).backward()
        grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
        results.append((out.features.detach(), out.aux_loss.detach(), xi.grad, grads))
    (fs, ls, xs, gs), (fd, ld, xd, gd) = results
    torch.testing.assert_close(fs, fd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ls, ld, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xs, xd, rtol=1e-9, atol=1e-11)
    used = _used_components(sparse, x)
    for n, _ in sparse.named_parameters():
        unused = n.startswith("components.") and int(n.split(".")[1]) not in used
        if unused:  # no image selected it: a zero gradient in both modes (weight decay still applies)
            assert torch.count_nonzero(gs[n]) == 0 and torch.count_nonzero(gd[n]) == 0, n
        else:
            torch.testing.assert_close(gs[n], gd[n], rtol=1e-9, atol=1e-11, msg=f"gradient of {n}")
    assert gs["gate.w_gate.weight"].abs().sum() > 0  # gate learns through the softmax weights


def test_one_sgd_step_with_momentum_and_weight_decay_moves_every_parameter_as_dense_does():
    """An unselected component must still decay and keep its momentum under sparse dispatch."""
    sparse = _small("gmsop", num_components=6, k=2).double().train()
    _randomise_gate(sparse)
    dense = _small("gmsop", num_components=6, k=2, dispatch="dense").double().train()
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(2, 7, 4, 4, dtype=torch.float64)  # 2 images x K=2: at least 2 of 6 components unused
    assert len(_used_components(sparse, x)) < 6
    for head in (sparse, dense):
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        for step in range(3):
            torch.manual_seed(10 + step)  # the same noise and tie-breaks for both
            opt.zero_grad()
            out = head(x)
            (out.features.square().mean() + out.aux_loss).backward()
            opt.step()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{name} after 3 SGD steps")


def test_eval_routing_of_an_untrained_gate_is_deterministic_and_spread():
    head = build_head({"name": "gmsop", "num_components": 16, "k": 8, "component_dims": [6, 4], "gate_dims": [6, 4]}, 7)
    head.eval()
    x = torch.randn(32, 7, 3, 3)
    first, again = head.gate(x).indices, head.gate(x).indices
    assert torch.equal(first, again)
    assert set(first.flatten().tolist()) == set(range(16))  # not all images on the same 8 by rounding
    assert all(len(set(r.tolist())) == 8 for r in first)


def _used_components(head, x) -> set[int]:
    torch.manual_seed(3)
    return set(head.gate(x).indices.flatten().tolist())


def test_sparse_dispatch_gradcheck_float64():
    head = _small("gmgap", num_components=3, k=2).double().eval()
    _randomise_gate(head)
    x = torch.randn(3, 7, 2, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: head(t).features, (x,), eps=1e-6, atol=1e-6)


def test_eval_mode_is_deterministic_and_noise_free():
    head = _small("gmsop").eval()
    _randomise_gate(head)
    x = torch.randn(4, 7, 4, 4)
    torch.manual_seed(0)
    a = head(x)
    torch.manual_seed(123)
    b = head(x)
    assert torch.equal(a.features, b.features)
    g = head.gate(x)
    assert torch.equal(g.noisy, g.clean)


def test_k_equals_n_is_a_dense_softmax_mixture():
    head = _small("gmsop", num_components=4, k=4).double().eval()
    _randomise_gate(head)
    x = torch.randn(3, 7, 4, 4, dtype=torch.float64)
    gates = torch.softmax(head.gate(x).clean, dim=-1)
    expected = sum(gates[:, n : n + 1] * c(x) for n, c in enumerate(head.components))
    torch.testing.assert_close(head(x).features, expected, rtol=1e-10, atol=1e-12)


def test_output_dims_and_components():
    head = build_head({"name": "gmsop"}, 128)  # paper defaults: N=16, K=8, 256 -> 128, SR-SOP
    assert (head.num_components, head.k, head.out_dim) == (16, 8, 8256)
    assert head.gate.pool.out_dim == 8256
    convs = [m for m in head.components[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [256, 128]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in head.components.modules())  # no BN in components
    gm = build_head({"name": "gmgap"}, 128)
    assert gm.out_dim == 512 and gm.gate.pool.out_dim == 128
    mix = build_head({"name": "mixture", "component_pooling": {"name": "sop"}, "num_components": 3, "k": 2}, 6)
    assert mix.out_dim == ops.triu_dim(6)


def test_mixture_config_errors():
    with pytest.raises(ValueError, match="1 <= K <= N; got K=6, N=5"):
        _small("gmsop", k=6)
    with pytest.raises(ValueError, match="K=0"):
        _small("gmsop", k=0)
    with pytest.raises(ValueError, match="positive channel counts"):
        _small("gmsop", component_dims=[0, 4])
    # Choices are enums in the constructor signature: the config error names the full key and the values.
    with pytest.raises(
        ValueError, match=r"head\.noise: Invalid value 'sometimes', expected one of \[image, component, none\]"
    ):
        _small("gmsop", noise="sometimes")
    with pytest.raises(
        ValueError, match=r"head\.dispatch: Invalid value 'lazy', expected one of \[sparse, dense, static\]"
    ):
        _small("gmsop", dispatch="lazy")
    with pytest.raises(ValueError, match=r"head\.pool_batching: Invalid value 'often'"):
        _small("gmsop", pool_batching="often")
    with pytest.raises(ValueError, match=r"head\.component_pooling\.reduce: Key 'reduce' not in"):  # nested: full path
        build_head({"name": "mixture", "component_pooling": {"name": "isqrt", "reduce": 3}}, 7)
    with pytest.raises(ValueError, match="'lazy' is not a valid Dispatch"):  # direct Python use is checked too
        GatedMixtureHead(7, 4, 2, dispatch="lazy")
    with pytest.warns(UserWarning, match="K=1.*no gradient"):
        _small("gmsop", k=1)


def test_a_new_gate_plugs_in_by_name_and_config_errors_name_the_key():
    """Gates are a registry like heads: one class registered, then `head.gate.name` picks it."""
    from gmsop.heads.gating import GATES, Gate, Gates
    from gmsop.registry import ConfigError

    @GATES.register("test_round_robin")
    class RoundRobin(Gate):  # image b goes to components b, b+1, ..., b+K-1 (mod N), equal weights
        def __init__(self, in_channels: int, num_components: int, k: int) -> None:
            super().__init__(num_components, k)

        def forward(self, x):
            b, n = x.shape[0], self.num_components
            indices = (torch.arange(b)[:, None] + torch.arange(self.k)[None, :]) % n
            weights = torch.full((b, self.k), 1.0 / self.k, dtype=x.dtype)
            dense = torch.zeros(b, n, dtype=x.dtype).scatter(-1, indices, weights)
            return Gates(indices, weights, dense, dense, dense, None)

    try:
        head = build_head(
            {
                "name": "mixture",
                "component_pooling": {"name": "gap"},
                "num_components": 4,
                "k": 2,
                "gate": {"name": "test_round_robin"},
                "balance": "load",
            },
            7,
        ).double()
        x = torch.randn(4, 7, 3, 3, dtype=torch.float64)
        out = head(x)
        expected = torch.stack(
            [sum(0.5 * head.components[(b + j) % 4](x[b : b + 1])[0] for j in range(2)) for b in range(4)]
        )
        torch.testing.assert_close(out.features, expected, rtol=1e-12, atol=1e-12)
        assert (
            out.routing.selected.tolist() == [2, 2, 2, 2] and out.aux_loss.item() == 0.0
        )  # balanced; load -> importance
        with pytest.raises(ConfigError, match="unknown gate 'nope'; known gates: .*noisy_top_k"):
            build_head({"name": "mixture", "gate": {"name": "nope"}}, 7)
        with pytest.raises(ConfigError, match=r"head\.gate\.trunk_dimz"):
            build_head({"name": "mixture", "gate": {"name": "noisy_top_k", "trunk_dimz": [4]}}, 7)
    finally:
        GATES._entries.pop("test_round_robin")


def test_stats_report_usage():
    head = _small("gmsop").train()
    out = head(torch.randn(10, 7, 4, 4))
    assert head.num_components == out.routing.selected.numel() == 5
    assert out.routing.selected.sum().item() == 10 * 3
    assert out.routing.weight_sum.sum().item() == pytest.approx(10.0, rel=1e-5)
    assert out.stats["cv"].item() == pytest.approx(math.sqrt(out.stats["balance_loss"].item() * 10 / 100), rel=1e-5)


def test_sparse_equals_dense_with_parametric_component_pooling():
    """Pools with parameters (here a 1x1 conv+BN reduction) run per component, not batched."""
    cfg = {
        "name": "mixture",
        "component_pooling": {"name": "isqrt", "reduce_dim": 3},
        "num_components": 4,
        "k": 2,
        "component_dims": [5],
        "gate": {"name": "noisy_top_k", "trunk_dims": [4], "pooling": {"name": "gap"}},
    }
    sparse = build_head({**cfg, "dispatch": "sparse", "pool_batching": "always"}, 7).double().eval()
    dense = build_head({**cfg, "dispatch": "dense"}, 7).double().eval()
    assert not sparse.shared_pool and _small("gmsop").shared_pool
    _randomise_gate(sparse)
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(6, 7, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(sparse(x).features, dense(x).features, rtol=1e-10, atol=1e-12)


# ---- static dispatch (fixed shapes) against sparse and dense ----------------------------------
@pytest.mark.parametrize("name", ["gmsop", "gmgap"])
def test_static_dispatch_equals_sparse_and_dense_in_outputs_and_every_gradient(name):
    heads = {d: _small(name, dispatch=d).double().train() for d in ("static", "sparse", "dense")}
    _randomise_gate(heads["static"])
    for d in ("sparse", "dense"):
        heads[d].load_state_dict(heads["static"].state_dict())
    x = torch.randn(9, 7, 4, 4, dtype=torch.float64)
    w = torch.randn(9, heads["static"].out_dim, dtype=torch.float64)
    results = {}
    for d, head in heads.items():
        torch.manual_seed(3)  # the same noise and tie-breaks for all three
        xi = x.clone().requires_grad_(True)
        out = head(xi)
        ((out.features * w).sum() + out.aux_loss).backward()
        grads = {n: p.grad.clone() for n, p in head.named_parameters()}
        results[d] = (out.features.detach(), out.aux_loss.detach(), xi.grad, grads)
    fs, ls, xs, gs = results["static"]
    for d in ("sparse", "dense"):
        f, loss, xg, g = results[d]
        torch.testing.assert_close(fs, f, rtol=1e-10, atol=1e-12, msg=f"features, static vs {d}")
        torch.testing.assert_close(ls, loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xs, xg, rtol=1e-9, atol=1e-11, msg=f"input gradient, static vs {d}")
        for n in gs:
            torch.testing.assert_close(gs[n], g[n], rtol=1e-9, atol=1e-11, msg=f"gradient of {n}, static vs {d}")
    unused = set(range(5)) - _used_components(heads["static"], x)
    for c in unused:  # a zero gradient, not none (weight decay and momentum still apply)
        assert all(torch.count_nonzero(p.grad) == 0 for p in heads["static"].components[c].parameters())


def test_static_dispatch_three_sgd_steps_with_momentum_and_weight_decay_equal_sparse():
    heads = [_small("gmsop", num_components=6, k=2, dispatch=d).double().train() for d in ("static", "sparse")]
    _randomise_gate(heads[0])
    heads[1].load_state_dict(heads[0].state_dict())
    x = torch.randn(2, 7, 4, 4, dtype=torch.float64)  # 2 images x K=2: at least 2 of 6 components unused
    assert len(_used_components(heads[0], x)) < 6
    for head in heads:
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        for step in range(3):
            torch.manual_seed(10 + step)
            opt.zero_grad()
            out = head(x)
            (out.features.square().mean() + out.aux_loss).backward()
            opt.step()
    for (name, p), q in zip(heads[0].named_parameters(), heads[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{name} after 3 SGD steps")


def test_static_dispatch_gradcheck_float64():
    head = _small("gmsop", num_components=3, k=2, dispatch="static").double().eval()
    _randomise_gate(head)
    x = torch.randn(3, 7, 3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: head(t).features, (x,), eps=1e-6, atol=1e-6)


def test_static_dispatch_refuses_component_pooling_with_parameters():
    cfg = {"name": "mixture", "component_pooling": {"name": "isqrt", "reduce_dim": 3}, "num_components": 4, "k": 2}
    with pytest.raises(ValueError, match="dispatch=static needs parameter-free component pooling"):
        build_head({**cfg, "dispatch": "static"}, 7)
