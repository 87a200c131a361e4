"""Gated mixtures of pooling components: GM-SOP and GM-GAP."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Optional

import torch
from torch import nn

from gmsop import ops
from gmsop.heads.base import HEADS, HeadOutput, PoolingHead, Routing
from gmsop.heads.gating import Gates, Noise, build_gate, check_top_k, conv_relu_stack
from gmsop.ops import Backward, Side

PAPER_N, PAPER_K = 16, 8  # GM-*-16-8: the paper's N components, K chosen per image (every mixture's default)


class Balance(StrEnum):
    importance = "importance"  # CV^2 of the summed gate weights (the paper)
    load = "load"  # CV^2 of Shazeer et al.'s smooth load estimate


class Dispatch(StrEnum):
    sparse = "sparse"  # each component on the images that selected it
    dense = "dense"  # every component on every image (the reference)
    static = "static"  # each (image, component) pair at once, fixed shapes: one CUDA graph captures it


class PoolBatching(StrEnum):
    auto = "auto"  # one batched pooling over all pairs on CUDA or under torch.compile, else per component
    always = "always"
    never = "never"


class GatePooling(StrEnum):
    isqrt = "isqrt"
    gap = "gap"


class Component(nn.Module):
    """1x1 conv + ReLU layers (no BN) then any registered head: one mixture component.

    With dims (256, 128) and an `isqrt` head this is the paper's parametric SR-SOP
    (supplementary Eq. 7); with (512,) and `gap` it is a GM-GAP component.
    """

    def __init__(self, in_channels: int, dims: Sequence[int], pooling: Mapping[str, Any]) -> None:
        """`pooling` is a head config already checked by HEADS.validate (once for all N components)."""
        super().__init__()
        self.convs, ch = conv_relu_stack(in_channels, dims, batch_norm=False)
        self.pool = HEADS.construct(pooling, ch, path="head.component_pooling")
        self.out_dim = self.pool.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x)).features


@HEADS.register("parametric_isqrt")
class ParametricISqrtHead(PoolingHead):
    """Parametric SR-SOP (supplementary Eq. 7): 1x1 conv + ReLU layers, then iSQRT-COV.

    One GM-SOP component on its own, as the paper's "parametric SR-SOP" baseline.
    """

    second_order = True

    def __init__(
        self,
        in_channels: int,
        dims: list[int] = [256, 128],  # noqa: B006  (config default; copied)
        iterations: int = 3,
        side: Side = Side.auto,
        backward: Backward = Backward.closed_form,
    ) -> None:
        super().__init__()
        self.component = Component(in_channels, list(dims), HEADS.validate(_isqrt(iterations, side, backward)))
        self.out_dim = self.component.out_dim

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.component(x)


class GatedMixtureHead(PoolingHead):
    """N components, K chosen per image by a gate (any registered in GATES; the paper's
    noisy top-K by default); output = sum of weight * component.

    dispatch="sparse" runs each component only on the images that selected it (gather,
    compute, weighted index_add back): about K/N of the dense cost; a component no image
    selected gets zero gradients, exactly as in the dense path. dispatch="dense" runs
    every component on every image and weights by the (mostly zero) gate matrix; it is
    the reference the sparse path is tested against, with identical gradients.
    dispatch="static" computes the same pairs as sparse, with every shape fixed by B and K
    (each pair's 1x1 convs as one batched matmul with its component's weights), so a CUDA
    graph or one compiled graph captures the whole head; it needs parameter-free component
    pooling (SR-SOP, GAP), as the paper's mixtures have.

    aux_loss is the balance loss: balance_weight * CV^2 of per-component importance (or
    of the smooth load estimate, balance="load"), divided by the batch size when
    balance_per_image (the release's effective scaling: mean CE + (w/B) CV^2). Under DDP both
    are the global batch's (importance summed over the processes; ops.across_processes).
    """

    second_order = True
    classifier_bn = True  # the release: BN (then dropout) after the fusion

    def __init__(
        self,
        in_channels: int,
        num_components: int = PAPER_N,
        k: int = PAPER_K,
        component_dims: Sequence[int] = (256, 128),
        component_pooling: Optional[Mapping[str, Any]] = None,
        gate: Optional[Mapping[str, Any]] = None,
        *,
        balance: Balance = Balance.importance,
        balance_weight: float = 100.0,
        balance_per_image: bool = True,
        dispatch: Dispatch = Dispatch.sparse,
        pool_batching: PoolBatching = PoolBatching.auto,
    ) -> None:
        super().__init__()
        # Config values are checked against the enums by the registry, naming the key; the
        # conversions below check values passed directly from Python.
        self.pool_batching = PoolBatching(pool_batching)
        check_top_k(num_components, k)  # (before the gate checks it: the error then names the head)
        if k == 1:
            warnings.warn(
                "K=1: a softmax over one selected score is always 1, so the gate gets no gradient "
                "from the classification loss (the paper requires K > 1)",
                stacklevel=2,
            )
        self.num_components, self.k = num_components, k
        self.balance, self.balance_weight, self.balance_per_image = Balance(balance), balance_weight, balance_per_image
        self.dispatch = Dispatch(dispatch)
        gate_cfg = dict(gate or {"name": "noisy_top_k"})
        noisy_per_image = gate_cfg.get("name") == "noisy_top_k" and gate_cfg.get("noise", Noise.image) == Noise.image
        if self.balance == Balance.load and noisy_per_image:
            warnings.warn(
                "head.balance=load estimates each component's chance of staying in the top K assuming "
                "independent noise per component (head.noise=component); with head.noise=image one draw "
                "is shared by all components, and the estimate is not the selection probability",
                stacklevel=2,
            )
        self.gate = build_gate(dict(gate or {"name": "noisy_top_k"}), in_channels, num_components, k)
        pooling = HEADS.validate(component_pooling or {"name": "isqrt"}, path="head.component_pooling")
        self.components = nn.ModuleList(Component(in_channels, component_dims, pooling) for _ in range(num_components))
        self.out_dim = self.components[0].out_dim
        # Identical, parameter-free poolings (SR-SOP, GAP) run once over all pairs.
        self.shared_pool = not any(p.requires_grad for c in self.components for p in c.pool.parameters())
        if self.dispatch == Dispatch.static and not self.shared_pool:
            raise ValueError(
                f"head.dispatch=static needs parameter-free component pooling (isqrt, gap, sop without "
                f"reduce_dim); head.component_pooling={dict(pooling)} has parameters: use dispatch=sparse"
            )

    def pool(self, x: torch.Tensor) -> HeadOutput:
        gates = self.gate(x)
        features = getattr(self, f"_{self.dispatch.value}")(x, gates)  # _sparse, _dense or _static
        loss, cv2 = self._balance_loss(gates, x.shape[0])
        stats = {"balance_loss": loss.detach(), "cv": cv2.detach().sqrt()}
        routing = Routing(selected=(gates.dense > 0).sum(0).detach(), weight_sum=gates.dense.detach().sum(0))
        return HeadOutput(features, loss, stats, routing)

    def _sparse(self, x: torch.Tensor, gates: Gates) -> torch.Tensor:
        """Gather each (image, component) pair once, sorted by component; run each component's
        convs on its images only; pool all pairs (in one batched call where that pays); weighted
        scatter-add back.

        Every tensor here has a fixed shape (B*K pairs) except inside `_run_components`, the one
        place where sizes depend on the routing: torch.compile runs that part eagerly and never
        recompiles for a new routing pattern."""
        flat_idx = gates.indices.flatten()
        order = flat_idx.argsort(stable=True)
        rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.k)[order]
        weights = gates.weights.flatten()[order]
        batched = self.shared_pool and self._batch_pooling(x)
        y = self._run_components(x.index_select(0, rows), flat_idx[order], pool=not batched)
        if batched:
            y = self.components[0].pool(y).features
        out_dtype = torch.promote_types(y.dtype, torch.float32)
        out = y.new_zeros(x.shape[0], self.out_dim, dtype=out_dtype)
        out.index_add_(0, rows, y.to(out_dtype) * weights.unsqueeze(1).to(out_dtype))
        return _in_half_precision_like(out, x)

    @torch.compiler.disable
    def _run_components(self, pairs: torch.Tensor, component: torch.Tensor, pool: bool) -> torch.Tensor:
        """Each component's convs (and pooling, if `pool`) on its run of `pairs` (sorted by
        `component`); returns the results in the same order. Sizes vary with the routing, so
        this runs eagerly under torch.compile (a graph break, not a recompilation per pattern)."""
        counts = torch.bincount(component, minlength=self.num_components).tolist()
        outs, unused = [], []
        for n, chunk in enumerate(pairs.split(counts)):
            if chunk.shape[0] == 0:  # skip empty batches
                unused += list(self.components[n].parameters())
                continue
            maps = self.components[n].convs(chunk)
            outs.append(self.components[n].pool(maps).features if pool else maps)
        y = torch.cat(outs)
        if unused and torch.is_grad_enabled():
            # Unselected components get zero gradients, not none, as in the dense path and the
            # authors' release: SGD then still applies their weight decay and momentum (and DDP
            # sees every parameter used).
            y = y + (torch.stack([p.sum() for p in unused]).sum() * 0.0).to(y.dtype)
        return y

    def _static(self, x: torch.Tensor, gates: Gates) -> torch.Tensor:
        """The sparse path's pairs with shapes fixed by B and K: pair p = (image p // K, its
        p % K-th selected component); each 1x1 conv layer is one batched matmul of every pair
        with its component's weight (gathered per pair), then one batched pooling, then the
        weighted sum over each image's K pairs. The same arithmetic as sparse dispatch (the
        pairs' sums in another order); a component no image selected gets a zero gradient
        through the gather, as in the other paths."""
        b, k = x.shape[0], self.k
        rows = torch.arange(b, device=x.device).repeat_interleave(k)
        component = gates.indices.flatten()
        h = x.index_select(0, rows).flatten(2)  # (B*K) x C x M
        for i, layer in enumerate(self.components[0].convs):  # 1x1 conv (no bias), ReLU, ...
            if isinstance(layer, nn.Conv2d):
                stacked = torch.stack([c.convs[i].weight.flatten(1) for c in self.components])  # N x out x in
                h = torch.bmm(stacked.index_select(0, component).to(h.dtype), h)
            else:
                h = layer(h)
        y = self.components[0].pool(h.view(b * k, -1, *x.shape[2:])).features
        out_dtype = torch.promote_types(y.dtype, torch.float32)
        mixed = (y.to(out_dtype) * gates.weights.flatten().unsqueeze(1).to(out_dtype)).view(b, k, -1).sum(1)
        return _in_half_precision_like(mixed, x)

    def _dense(self, x: torch.Tensor, gates: Gates) -> torch.Tensor:
        n, b = self.num_components, x.shape[0]
        maps = [c.convs(x) for c in self.components]
        if self.shared_pool and self._batch_pooling(x):
            y = self.components[0].pool(torch.cat(maps)).features
        else:
            y = torch.cat([c.pool(m).features for c, m in zip(self.components, maps)])  # (N*B) x D
        return torch.einsum("bn,nbd->bd", gates.dense.to(y.dtype), y.view(n, b, -1))

    def _batch_pooling(self, x: torch.Tensor) -> bool:
        """Pool all pairs in one batched call (only for identical, parameter-free poolings)?
        pool_batching="auto": yes on CUDA, where many small ops are launch-bound, and under
        torch.compile, where one static-shape call is one graph; no in eager mode on CPU, where
        one big batch measured 1.5x slower than per component on 2 cores."""
        if self.pool_batching != "auto":
            return self.pool_batching == "always"
        return x.is_cuda or torch.compiler.is_compiling()

    def _balance_loss(self, gates: Gates, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.balance == "load" and gates.noise_std is not None:
            per_component = ops.load_estimate(gates.clean, gates.noisy, gates.noise_std, self.k)
        else:
            per_component = ops.importance(gates.dense)
        per_component, batch = ops.across_processes(per_component, batch)  # the global batch under DDP
        cv2 = ops.cv_squared(per_component.to(torch.promote_types(per_component.dtype, torch.float32)))
        scale = self.balance_weight / batch if self.balance_per_image else self.balance_weight
        return scale * cv2, cv2


@HEADS.register("gmsop")
class GMSOPHead(GatedMixtureHead):
    """GM-SOP-N-K: parametric SR-SOP components (1x1 conv 256 + ReLU, 1x1 conv 128 + ReLU, iSQRT).

    `**options` are GatedMixtureHead's keyword-only options (noise, balance, dispatch, ...).
    """

    def __init__(
        self,
        in_channels: int,
        num_components: int = PAPER_N,
        k: int = PAPER_K,
        component_dims: list[int] = [256, 128],  # noqa: B006  (config default; copied)
        gate_dims: list[int] = [256, 128],  # noqa: B006
        iterations: int = 3,
        side: Side = Side.auto,
        backward: Backward = Backward.closed_form,
        gate_pooling: GatePooling = GatePooling.isqrt,
        noise: Noise = Noise.image,
        **options: Any,
    ) -> None:
        isqrt_cfg = _isqrt(iterations, side, backward)
        super().__init__(
            in_channels,
            num_components,
            k,
            list(component_dims),
            isqrt_cfg,
            _noisy_top_k(gate_dims, _pooling(gate_pooling, isqrt_cfg), noise),
            **options,
        )


@HEADS.register("gmgap")
class GMGAPHead(GatedMixtureHead):
    """GM-GAP-N-K: first-order components (1x1 conv 512 + ReLU, then GAP); GAP gating.

    First-order like GAP: the backbone keeps its last downsampling (8x8 maps at 64x64 inputs),
    as the release builds every first-order head (cnn_init_resnet_GM.m strides stage 5 when
    order == 1)."""

    second_order = False

    def __init__(
        self,
        in_channels: int,
        num_components: int = PAPER_N,
        k: int = PAPER_K,
        component_dims: list[int] = [512],  # noqa: B006
        gate_dims: list[int] = [256, 128],  # noqa: B006
        gate_pooling: GatePooling = GatePooling.gap,
        noise: Noise = Noise.image,
        **options: Any,
    ) -> None:
        super().__init__(
            in_channels,
            num_components,
            k,
            list(component_dims),
            {"name": "gap"},
            _noisy_top_k(gate_dims, _pooling(gate_pooling, _isqrt(3, "auto", "closed_form")), noise),
            **options,
        )


@HEADS.register("mixture")
class AnyMixtureHead(GatedMixtureHead):
    """A gated mixture of any registered head with any registered gate (both are configs with a name)."""

    def __init__(
        self,
        in_channels: int,
        component_pooling: Optional[dict] = None,  # default: isqrt
        num_components: int = PAPER_N,
        k: int = PAPER_K,
        component_dims: list[int] = [],  # noqa: B006
        gate: Optional[dict] = None,  # default: noisy_top_k with GAP pooling (configs/head/gate/)
        **options: Any,
    ) -> None:
        gate = dict(gate) if gate else {"name": "noisy_top_k", "pooling": {"name": "gap"}}
        super().__init__(in_channels, num_components, k, list(component_dims), component_pooling, gate, **options)


def _in_half_precision_like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The mixture's sum (accumulated in float32 or wider) back in the input's dtype under
    fp16/bf16 autocast; otherwise as accumulated."""
    return out.to(x.dtype) if x.dtype in (torch.float16, torch.bfloat16) else out


def _isqrt(iterations: int, side: Side, backward: Backward) -> dict:
    return {"name": "isqrt", "iterations": iterations, "side": side, "backward": backward}


def _noisy_top_k(trunk_dims: Sequence[int], pooling: dict, noise: Noise) -> dict:
    return {"name": "noisy_top_k", "trunk_dims": list(trunk_dims), "pooling": pooling, "noise": noise}


def _pooling(name: GatePooling, isqrt_cfg: dict) -> dict:
    """The gate's pooling config (GatePooling checks the name; head=mixture takes any head)."""
    return isqrt_cfg if GatePooling(name) == GatePooling.isqrt else {"name": "gap"}
