"""Gates route each image to K of a mixture's N components; they are pluggable like heads.

A gate is a `Gate` registered in `GATES` (config `head.gate` of `head=mixture`): its
forward returns `Gates` (top-K indices and weights, the dense gate matrix, and the scores
the balance losses need). `noisy_top_k` is the paper's: trunk -> pooling ->
H(x) = Wg x + g * softplus(Wn x) -> top-K softmax.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gmsop.heads.base import build_head
from gmsop.registry import Registry


class Noise(StrEnum):
    """The gate's training noise g in H = Wg p + g * softplus(Wn p)."""

    image = "image"  # one scalar per image (the paper)
    component = "component"  # one per component (Shazeer et al.)
    none = "none"


class Gates(NamedTuple):
    """Top-K routing for a batch.

    indices: B x K selected components; weights: B x K softmax over the selected scores;
    dense: B x N gate matrix (zeros outside the top-K); clean/noisy: B x N scores;
    noise_std: B x N noise scale of `noisy` (for the load-based balance loss), or None when
    no noise was added (evaluation, or a gate without noise): the load loss then falls back
    to importance.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    dense: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    noise_std: Optional[torch.Tensor]


def check_top_k(num_components: int, k: int) -> None:
    """K of N components: N >= 1 and 1 <= K <= N (for gates, and the mixtures that hold them)."""
    if num_components < 1:
        raise ValueError(f"num_components (N) must be >= 1, got {num_components}")
    if not 1 <= k <= num_components:
        raise ValueError(f"K must satisfy 1 <= K <= N; got K={k}, N={num_components}")


class Gate(nn.Module, ABC):
    """Base of every gate: routes each of a batch's images to K of N components."""

    def __init__(self, num_components: int, k: int) -> None:
        super().__init__()
        check_top_k(num_components, k)
        self.num_components, self.k = num_components, k

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Gates:
        """B x C x H x W map -> the batch's routing."""


GATES: Registry[Gate] = Registry("gate", fixed_args=("in_channels", "num_components", "k"))


def build_gate(cfg: Mapping[str, Any], in_channels: int, num_components: int, k: int) -> Gate:
    """Build a registered gate from a config mapping with a `name` key (the mixture's `head.gate`)."""
    return GATES.build(cfg, in_channels, num_components, k, path="head.gate")


def conv_relu_stack(in_channels: int, dims: Sequence[int], batch_norm: bool) -> tuple[nn.Sequential, int]:
    """1x1 conv (+ BN) + ReLU per entry of dims; returns the stack and its output channels.

    The convs have no bias, with or without BN, as in the GM-SOP release.
    """
    layers: list[nn.Module] = []
    ch = in_channels
    for d in dims:
        if d < 1:
            raise ValueError(f"layer dims must be positive channel counts, got {list(dims)}")
        layers.append(nn.Conv2d(ch, d, kernel_size=1, bias=False))
        if batch_norm:
            layers.append(nn.BatchNorm2d(d))
        layers.append(nn.ReLU(inplace=True))
        ch = d
    return nn.Sequential(*layers), ch


def top_k(scores: torch.Tensor, k: int, random_ties: bool) -> torch.Tensor:
    """Indices (B x K) of the K largest scores per row, with ties broken on purpose.

    random_ties (training): a random permutation, then a stable descending sort: exactly
    top-K by score, equal scores (all of them at initialisation) ordered at random.
    Otherwise (eval) a fixed rule: scores within 1e-6 (relative to the row's largest) of
    each other count as equal, and row b lists equal components starting from b mod N, so an
    untrained gate spreads images over the components instead of letting float rounding
    send every image to the same ones. Distinct scores are ranked exactly as by topk.
    """
    rows, n = scores.shape
    if random_ties:
        order = torch.rand_like(scores).argsort(dim=-1)
        key = scores.gather(-1, order)
    else:
        offset = torch.arange(rows, device=scores.device).unsqueeze(1)
        order = (torch.arange(n, device=scores.device) + offset) % n
        s = scores.detach().double().gather(-1, order)
        top = s.amax(-1, keepdim=True)
        step = 1e-6 * s.abs().amax(-1, keepdim=True).clamp_min(1e-30)
        key = torch.round((s - top) / step)
    ranked = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :k]
    return order.gather(-1, ranked)


@GATES.register("noisy_top_k")
class NoisyTopKGate(Gate):
    """The GM-SOP gating module (its own module, reusable for any mixture).

    trunk: 1x1 conv + BN + ReLU layers (`trunk_dims`); pooling: any registered head
    (SR-SOP for GM-SOP, GAP for GM-GAP); scores H = Wg p + g * softplus(Wn p) with no bias,
    Wg and Wn initialised to ones/size. Noise g ~ N(0, 1): one scalar per image
    ("image", the paper), one per component ("component", Shazeer et al.), or "none";
    never in eval mode. Top-K per image (ties: see `top_k`), softmax over the K selected scores.
    """

    def __init__(
        self,
        in_channels: int,
        num_components: int,
        k: int,
        trunk_dims: list[int] = [256, 128],  # noqa: B006  (config default; copied)
        pooling: Optional[dict] = None,  # any head config; default isqrt (GM-SOP), gap for GM-GAP
        noise: Noise = Noise.image,
    ) -> None:
        super().__init__(num_components, k)
        self.noise = Noise(noise)
        self.trunk, ch = conv_relu_stack(in_channels, trunk_dims, batch_norm=True)
        self.pool = build_head(dict(pooling or {"name": "isqrt"}), ch, path="head.gate.pooling")
        self.w_gate = nn.Linear(self.pool.out_dim, num_components, bias=False)
        self.w_noise = nn.Linear(self.pool.out_dim, num_components, bias=False)
        for w in (self.w_gate, self.w_noise):
            nn.init.constant_(w.weight, 1.0 / self.pool.out_dim)

    def forward(self, x: torch.Tensor) -> Gates:
        p = self.pool(self.trunk(x)).features
        clean = self.w_gate(p)
        noise_std = F.softplus(self.w_noise(p))
        noisy = clean
        if self.training and self.noise != "none":
            shape = (clean.shape[0], 1) if self.noise == "image" else clean.shape
            noisy = clean + torch.randn(shape, dtype=clean.dtype, device=clean.device) * noise_std
        else:
            noise_std = None
        indices = top_k(noisy, self.k, random_ties=self.training)
        weights = torch.softmax(noisy.gather(-1, indices), dim=-1)
        dense = torch.zeros_like(noisy).scatter(-1, indices, weights)
        return Gates(indices, weights, dense, clean, noisy, noise_std)
