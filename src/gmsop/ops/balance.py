"""Balance losses for gated mixtures (Shazeer et al. 2017; GM-SOP release)."""

from __future__ import annotations

import torch


def cv_squared(values: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation, std(values)^2 / mean(values)^2, std with N-1."""
    if values.numel() < 2:
        return values.new_zeros(())
    return values.var(unbiased=True) / (values.mean().square() + eps)


def importance(gates: torch.Tensor) -> torch.Tensor:
    """Per-component importance: the sum over the batch of the (B x N) gate weights."""
    return gates.sum(dim=0)


def load_estimate(clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, k: int) -> torch.Tensor:
    """Smooth estimate of how many images select each component (Shazeer et al., Appendix A).

    P(i selected for image b) = Phi((clean_bi - threshold_bi) / noise_std_bi), where the
    threshold is the k-th largest noisy score among the other components. Returns N loads.
    """
    n = noisy.shape[-1]
    top = noisy.topk(min(k + 1, n), dim=-1).values
    kth = top[:, k - 1 : k]  # threshold for components outside the top-k
    kth_plus_one = top[:, k : k + 1] if k < n else torch.full_like(kth, -torch.inf)  # for those inside
    inside = noisy >= kth
    threshold = torch.where(inside, kth_plus_one, kth)
    normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
    prob = normal.cdf((clean - threshold) / noise_std.clamp_min(1e-9))
    return prob.sum(dim=0)


def across_processes(per_component: torch.Tensor, batch: int) -> tuple[torch.Tensor, int]:
    """Per-component sums and the batch size of the global batch: summed over the processes of a
    distributed job (DDP), so that the balance loss and its gradients are those of one process on
    the whole batch; unchanged in a single process.

    The sum is exchanged in the forward pass only (a collective inside the backward pass could
    interleave with DDP's own gradient all-reduces differently on different processes). Each
    process returns world_size x its own sums, plus the other processes' as a constant: the value
    is the global sum, and the gradient, once DDP averages it over the processes, is exactly the
    gradient of the global loss."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return per_component, batch
    world = dist.get_world_size()
    total = per_component.detach().clone()
    dist.all_reduce(total)
    count = torch.tensor([batch], device=per_component.device)
    dist.all_reduce(count)
    own = world * per_component
    return own + (total - own).detach(), int(count.item())
