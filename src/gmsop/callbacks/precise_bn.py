"""BatchNorm statistics re-estimated for the weights they are used with ("precise BN").

During training a BatchNorm layer's running mean and variance are an exponential average over the
last few hundred batches, taken while the weights moved under them; a mixture component updates
its own only on the images routed to it. Validated with those lagging statistics, a model can
read 10-25 points worse than its weights are (one GM-SOP seed: 32.8% val error as evaluated,
6.0% with every statistic re-estimated). Before each validation of a fit, `PreciseBatchNorm`
re-estimates them: torch's `swa_utils.update_bn` (a plain average over the batches, with
momentum=None) over a fixed number of training batches, with the weights unchanged and every
other layer in evaluation mode (a mixture routes as it does at evaluation: no gate noise, no
dropout). best.ckpt and last.ckpt are written after the validation, so they hold these
statistics, and the test stage and gmsop.eval use them.

- Which layers: every BatchNorm whose parameters train; one held fixed (a fine-tuning warm-up, or
  frozen stages) keeps its statistics. A layer that saw no batch in the pass (a mixture component
  no image was routed to) keeps the statistics it had.
- Exact under stops: the batches are drawn by the data module from (its shuffle seed, the epoch,
  the process) alone, without augmentation, and the pass draws nothing from the global random
  generators: training after it is bit for bit what it would have been without it, and a stop
  signal during the pass is acted on after the validation (gmsop.callbacks.save_on_interrupt), so
  the checkpoint it saves holds the re-estimated statistics.
- Under DDP each process averages over its own batches, then the processes' averages are
  averaged, weighted by their batch counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn


class PreciseBatchNorm(L.Callback):
    """Re-estimate the trained BatchNorm layers' statistics over `batches` training batches before
    each validation of a fit (not the sanity check). The data module provides the batches
    (`statistics_batches(count, epoch, rank, world_size, device)`: normalised image tensors)."""

    def __init__(self, batches: int) -> None:
        if batches < 1:
            raise ValueError(f"PreciseBatchNorm needs at least 1 batch, got {batches}")
        self.batches = batches

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        images = trainer.datamodule.statistics_batches(
            self.batches, trainer.current_epoch, trainer.global_rank, trainer.world_size, pl_module.device
        )
        norms = reestimate_batchnorm(pl_module, images)
        if trainer.world_size > 1:
            _average_over_processes(norms)


def trained_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of `model` that track statistics and whose parameters train (a layer held
    fixed, its parameters without gradients, keeps the statistics it has)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm)
        and m.track_running_stats
        and all(p.requires_grad for p in m.parameters(recurse=False))
    ]


def reestimate_batchnorm(model: nn.Module, images: Iterator[torch.Tensor]) -> list[_BatchNorm]:
    """Replace the statistics of `model`'s trained BatchNorm layers by their plain average over
    `images` (batches of model inputs), computed by `torch.optim.swa_utils.update_bn` with every
    other module in evaluation mode; weights, other modules' modes and the global random generators
    are as they were afterwards. Returns the layers it re-estimated."""
    norms = trained_batchnorms(model)
    if not norms:
        return norms
    before = {m: (m.running_mean.clone(), m.running_var.clone()) for m in norms}
    modes = {m: m.training for m in model.modules()}
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            update_bn(images, _OnlyTheseNormsTrain(model, norms))
    finally:
        for module, training in modes.items():
            module.training = training
    for m in norms:
        if int(m.num_batches_tracked) == 0:  # no batch reached it in the pass: keep what it had
            m.running_mean.copy_(before[m][0])
            m.running_var.copy_(before[m][1])
    return norms


class _OnlyTheseNormsTrain(nn.Module):
    """What update_bn is given: `modules()` yields only the chosen BatchNorm layers (the only ones
    whose statistics it resets and averages), `train()` puts those in training mode and the rest of
    the model in evaluation mode, and calling it runs the whole model."""

    def __init__(self, model: nn.Module, norms: list[_BatchNorm]) -> None:
        super().__init__()
        self.norms = nn.ModuleList(norms)
        self._model = (model,)  # (a tuple: not registered, so not among modules())

    def train(self, mode: bool = True) -> _OnlyTheseNormsTrain:
        self._model[0].eval()
        for m in self.norms:
            m.train(mode)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self._model[0](x)


def _average_over_processes(norms: list[_BatchNorm]) -> None:
    """Each layer's statistics averaged over the DDP processes, weighted by the batches each saw."""
    if not norms:
        return
    counts = torch.stack([m.num_batches_tracked.to(m.running_mean) for m in norms])
    flat = torch.cat([torch.cat([m.running_mean, m.running_var]) * n for m, n in zip(norms, counts)])
    torch.distributed.all_reduce(flat)
    torch.distributed.all_reduce(counts)
    offset = 0
    for m, n in zip(norms, counts):
        size = m.running_mean.numel()
        if n > 0:
            m.running_mean.copy_(flat[offset : offset + size] / n)
            m.running_var.copy_(flat[offset + size : offset + 2 * size] / n)
            m.num_batches_tracked.fill_(int(n))
        offset += 2 * size
