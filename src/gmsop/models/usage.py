"""How often each component of a gated head is used, per epoch (a torchmetrics Metric, so the
counts are summed across DDP processes), and the names under which it is logged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchmetrics import Metric

from gmsop.heads import Routing


@dataclass
class UsageSummary:
    """usage: N, fraction of images that selected each component (sums to K);
    mean_gate: N, mean gate weight of a component when selected (0 if never selected)."""

    usage: torch.Tensor
    mean_gate: torch.Tensor

    def logged(self, split: str) -> dict[str, float]:
        """The per-epoch values as logged (CSV columns, W&B keys)."""
        out = {usage_key(split, i): float(u) for i, u in enumerate(self.usage)}
        out.update({f"gate/{split}/c{i:02d}": float(g) for i, g in enumerate(self.mean_gate)})
        out[f"usage/{split}/active"] = float((self.usage > 0).sum())
        out[f"usage/{split}/max_share"] = float(self.usage.max() / self.usage.sum().clamp_min(1e-12))
        out[f"usage/{split}/entropy"] = usage_entropy(self.usage.tolist())
        return out


def usage_entropy(usage: Sequence[float]) -> float:
    """Entropy of the components' shares of all selections, divided by ln N: 1.0 when every
    component is selected equally often, 0.0 when one component takes every selection (N > 1)."""
    total = sum(usage)
    if len(usage) < 2 or total <= 0:
        return 0.0
    shares = [u / total for u in usage if u > 0]
    return sum(p * math.log(1 / p) for p in shares) / math.log(len(usage))


def usage_key(split: str, component: int) -> str:
    """The logged name of a component's usage (read back by gmsop.report)."""
    return f"usage/{split}/c{component:02d}"


class ComponentUsage(Metric):
    """Accumulates a gated head's Routing over an epoch; compute() gives a UsageSummary."""

    full_state_update = False

    def __init__(self, num_components: int) -> None:
        super().__init__()
        self.add_state("selected", torch.zeros(num_components, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros(num_components, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, routing: Routing, images: int) -> None:
        self.selected += routing.selected.to(self.selected)
        self.weight_sum += routing.weight_sum.to(self.weight_sum)
        self.images += images

    def compute(self) -> UsageSummary:
        return UsageSummary(
            (self.selected / self.images.clamp_min(1)).float(), (self.weight_sum / self.selected.clamp_min(1)).float()
        )
