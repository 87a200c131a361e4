"""model.compile and model.channels_last: compiled parts equal eager ones, checkpoints load either
way, and the mixture never recompiles for a new routing pattern.

Most tests compile with the `aot_eager` backend: it runs TorchDynamo's capture and AOT autograd
(where graph breaks, guards and recompilations happen) without Inductor's code generation, which
takes minutes on 2 cores; one test runs Inductor itself on a small model.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from gmsop.config import OptimConfig
from gmsop.heads import HEADS, build_head
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.models.compiling import compile_options
from gmsop.registry import ConfigError

SGD = asdict(OptimConfig())
MIXTURES = {"gmsop", "gmgap", "mixture"}
# float64 compiled vs eager: the same ops in the same order, so equal up to reassociation in fused kernels
RTOL, ATOL = 1e-9, 1e-12


def _head(name: str) -> torch.nn.Module:
    """A float64 head with random weights (no zero-initialised gate: every gradient is non-trivial)."""
    cfg = {"name": name, **({"num_components": 4, "k": 2} if name in MIXTURES else {})}
    head = build_head(cfg, 12).double().train()
    for p in head.parameters():
        if p.ndim > 1:
            p.data.normal_()
    return head


def _forward_backward(module, x: torch.Tensor, seed: int = 3):
    """Outputs and gradients of a random linear loss (not |y|^2, which is constant for the
    L2-normalised bcnn/cbp features and so has zero gradient)."""
    x = x.clone().requires_grad_()
    weights = torch.randn(x.shape[0], module.out_dim, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)  # the same gate noise in both
    out = module(x)
    ((out.features * weights).sum() + out.aux_loss).backward()
    return out.features.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # no cache or recompile budget shared between tests
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", HEADS.names())
def test_compiled_head_equals_eager_in_outputs_and_every_gradient(name):
    eager = _head(name)
    compiled = copy.deepcopy(eager)
    compiled.compile(backend="aot_eager")
    x = torch.randn(4, 12, 5, 4, dtype=torch.float64)
    (y0, gx0, gp0), (y1, gx1, gp1) = _forward_backward(eager, x), _forward_backward(compiled, x)
    assert counters["stats"]["unique_graphs"] >= 1  # really compiled, not silently eager
    torch.testing.assert_close(y1, y0, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gx1, gx0, rtol=RTOL, atol=ATOL)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def test_compiled_mixture_does_not_recompile_across_routing_patterns():
    """50 steps with random routing (some components unused in some batches) after 3 warm-up
    steps: no new graph and no recompilation. Before the dispatch was split into a static-shape
    part and an eager per-component part, every new set of per-component counts recompiled."""
    torch.manual_seed(0)
    head = build_head({"name": "gmsop", "num_components": 6, "k": 2, "component_dims": [6], "gate_dims": [6]}, 5)
    head.train().compile(backend="aot_eager")
    patterns, frames = set(), []
    for step in range(53):
        for w in (head.gate.w_gate.weight, head.gate.w_noise.weight):  # a new routing each step
            w.data = torch.randn_like(w) * 3
        out = head(torch.randn(8, 5, 4, 4))
        (out.features.sum() + out.aux_loss).backward()
        patterns.add(tuple(out.routing.selected.tolist()))
        if step == 2:
            frames = dict(counters["stats"])
    assert len(patterns) > 20 and any(0 in p for p in patterns)  # the test really varied the routing
    assert dict(counters["stats"]) == frames  # no graph captured after step 3
    assert not counters["recompiles"]


def _classifier(**model) -> SecondOrderClassifier:
    torch.manual_seed(0)
    return SecondOrderClassifier({"backbone": "resnet18_64", **model}, {"name": "isqrt"}, SGD, 10, 1).double()


def test_compiled_checkpoint_loads_into_eager_model_and_back(tmp_path):
    compiled = _classifier(compile={"backend": "aot_eager"})
    eager = _classifier()
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` prefixes
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    compiled.eval()
    with torch.no_grad():
        expected = compiled(x)
    torch.save(compiled.state_dict(), tmp_path / "compiled.pt")
    eager.load_state_dict(torch.load(tmp_path / "compiled.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(eager.eval()(x), expected, rtol=RTOL, atol=ATOL)
    other = _classifier(compile={"backend": "aot_eager"})
    other.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_inductor_compiled_isqrt_head_equals_eager():
    """torch.compile's default backend (Inductor: generated C++ kernels) on the iSQRT head, whose
    closed-form Newton-Schulz backward is an autograd.Function: float64 outputs and every gradient
    within 1e-10 of the largest norm (fused kernels reorder sums, so not bit for bit; measured ~2e-16).
    Only the head: Inductor on the whole classifier costs ~50 s of compilation on 2 cores."""
    eager = _head("isqrt")
    compiled = copy.deepcopy(eager)
    compiled.compile()
    x = torch.randn(4, 12, 5, 4, dtype=torch.float64)
    expected, got = _forward_backward(eager, x), _forward_backward(compiled, x)
    assert counters["stats"]["unique_graphs"] >= 1
    scale = max(expected[0].norm(), expected[1].norm(), *(g.norm() for g in expected[2]))
    for a, b in zip([got[0], got[1], *got[2]], [expected[0], expected[1], *expected[2]]):
        assert (a - b).norm() <= 1e-10 * scale


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_accepts_channels_last_maps(name):
    head = _head(name).eval()
    x = torch.randn(3, 12, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = head(x).features
        got = head(x.contiguous(memory_format=torch.channels_last)).features
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_channels_last_model_equals_contiguous_one():
    nhwc, nchw = _classifier(channels_last=True).eval(), _classifier().eval()
    assert nhwc.backbone.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), nchw(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fastest", r"mode='fastest'; allowed: default, reduce-overhead"),
        ({"mod": "default"}, r"unknown key\(s\) \['mod'\]; allowed: .*fullgraph"),
        (3, r"model.compile=3; allowed: false, true"),
    ],
)
def test_bad_compile_values_name_the_value_and_what_is_allowed(value, message):
    with pytest.raises(ConfigError, match=message):
        compile_options(value)
    with pytest.raises(ConfigError, match=message):
        _classifier(compile=value)


def test_compile_values():
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {} and compile_options("max-autotune") == {"mode": "max-autotune"}
    assert compile_options({"backend": "aot_eager", "dynamic": False}) == {"backend": "aot_eager", "dynamic": False}


def test_static_dispatch_compiles_to_one_graph_that_equals_sparse_and_never_recompiles():
    """dispatch=static: the whole mixture (gate, components, pooling, fusion) in one graph
    (fullgraph=True fails on any graph break, as it does for the sparse path), equal to eager
    sparse dispatch, and no recompilation when the routing changes."""
    torch.manual_seed(0)
    cfg = {"name": "gmsop", "num_components": 6, "k": 2, "component_dims": [6], "gate_dims": [6]}
    sparse = build_head({**cfg, "dispatch": "sparse"}, 5).double().train()
    static = build_head({**cfg, "dispatch": "static"}, 5).double().train()
    static.load_state_dict(sparse.state_dict())
    x = torch.randn(8, 5, 4, 4, dtype=torch.float64)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch.compile(copy.deepcopy(sparse), backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()
    compiled = torch.compile(static, backend="aot_eager", fullgraph=True)
    patterns = set()
    for step in range(12):
        routing = torch.randn(static.gate.w_gate.weight.shape, generator=torch.Generator().manual_seed(step)) * 3
        for head in (sparse, static):  # a new routing each step
            head.gate.w_gate.weight.data = routing.to(torch.float64)
        x = torch.randn(8, 5, 4, 4, dtype=torch.float64)
        ys, gxs, _ = _forward_backward(sparse, x, seed=step)
        yc, gxc, _ = _forward_backward(compiled, x, seed=step)
        torch.testing.assert_close(yc, ys, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(gxc, gxs, rtol=RTOL, atol=ATOL)
        patterns.add(tuple(static.gate(x).indices.flatten().tolist()))
    assert len(patterns) > 5
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
