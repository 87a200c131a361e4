"""Training-epoch means that survive a mid-epoch resume.

A training epoch's logged values (`train/loss_epoch`, `train/top1_err`, component usage, ...) are
running sums over its batches: Lightning's for `self.log(..., on_epoch=True)`, torchmetrics' for
the model's `train_*` metrics. Neither is in a checkpoint, so an epoch resumed mid-way would report
the mean of only the batches after the resume. `EpochSums` saves those sums with a mid-epoch
checkpoint (the metrics' summed over DDP processes) and adds them back after the resumed run's
first batch (the metrics' on rank 0 only), so the epoch reports what an uninterrupted one would.

Lightning keeps its sums in the training loop's result collection (private: reached through
`lightning_internals.epoch_results`; `tests/test_exact_resume.py` compares every logged row with an
uninterrupted run).
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from torchmetrics import Metric

from gmsop.callbacks.lightning_internals import epoch_results

KEY = "epoch_sums"


def _mid_epoch(trainer: L.Trainer) -> bool:
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return 0 < done < trainer.num_training_batches


def _training_metrics(pl_module: L.LightningModule) -> dict[str, Metric]:
    """The model's own epoch accumulators: Metric modules named train_* (e.g. metrics.train_top1)."""
    return {
        name: m
        for name, m in pl_module.named_modules()
        if isinstance(m, Metric) and name.rsplit(".", 1)[-1].startswith("train_")
    }


def _sums(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    logged = {}
    for key, result in epoch_results(trainer).items():
        additive = result.meta.is_mean_reduction or result.meta.is_sum_reduction
        if result.is_tensor and result.meta.on_epoch and additive:
            logged[key] = {name: value.detach().cpu().clone() for name, value in result.metric_state.items()}
    metrics = {}
    for name, m in _training_metrics(pl_module).items():
        if m.update_called:
            with m.sync_context(should_sync=trainer.world_size > 1):  # every process's sums (DDP)
                metrics[name] = {state: value.detach().cpu().clone() for state, value in m.metric_state.items()}
    return {"logged": logged, "metrics": metrics}


def _add(target: Any, sums: dict[str, torch.Tensor]) -> None:
    for name, value in sums.items():
        current = getattr(target, name)
        setattr(target, name, current + value.to(current.device, current.dtype))


class EpochSums(L.Callback):
    """Carries the interrupted epoch's training sums through a mid-epoch checkpoint (see module)."""

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if not _mid_epoch(trainer):
            return
        sums = _sums(trainer, pl_module)
        if self._pending is not None:  # saved again before the sums were added back: add them here
            for kind, parts in self._pending.items():
                for name, states in parts.items():
                    mine = sums[kind].get(name)
                    sums[kind][name] = {s: v + mine[s] for s, v in states.items()} if mine else states
        checkpoint[KEY] = sums

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(KEY)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending is None:
            return
        results = epoch_results(trainer)
        for key, sums in self._pending["logged"].items():
            if key in results:
                _add(results[key], sums)
        metrics = _training_metrics(pl_module) if trainer.is_global_zero else {}  # global sums: added once
        for name, sums in self._pending["metrics"].items():
            if name in metrics:
                _add(metrics[name], sums)
        self._pending = None
