"""The fine-tuning warm-up: the backbone held fixed for the first epochs while the rest trains."""

from __future__ import annotations

from typing import Optional

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn


class BackboneWarmUp(L.Callback):
    """For the first `epochs` epochs of a fit, `pl_module.backbone` is fixed (no gradients, BatchNorm
    statistics kept: its BatchNorm layers stay in eval mode) while the head and classifier train
    (model.freeze_backbone_epochs; the classifier adds this callback itself, to any Trainer).

    Its parameters stay in the optimiser (and its schedule) with no gradient, so SGD leaves them
    alone until the warm-up ends, and a resumed run restores the same optimiser whatever its epoch.
    A resumed run follows its epoch, also mid-epoch (Lightning gives no on_train_epoch_start for
    the epoch it resumes in: on_train_start decides too). Parameters that model.freeze_stages froze
    for good are not touched.

    Not Lightning's BaseFinetuning: it adds the parameters it thaws to the optimiser then (an
    optimiser saved in the warm-up would not fit the one after it), and it freezes BatchNorm by
    switching its running statistics off, so batches would be normalised by their own statistics
    rather than the pretrained ones.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs  # (model.freeze_backbone_epochs, checked by the classifier with the rest of its config)
        self._held: Optional[list[nn.Parameter]] = None  # the backbone parameters a warm-up holds
        self._norms: list[nn.Module] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """(Before the optimiser is made: every parameter that trains is in it.)"""
        if stage == "fit" and self._held is None:
            self._held = [p for p in pl_module.backbone.parameters() if p.requires_grad]
            self._norms = [m for m in pl_module.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def holds(self, trainer: L.Trainer) -> bool:
        """Whether the backbone is held now: fitting, in one of the first `epochs` epochs."""
        return trainer.state.fn == TrainerFn.FITTING and trainer.current_epoch < self.epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold_or_release(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold_or_release(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        """BatchNorm back to eval mode if anything set the module training since (a validation does)."""
        if self.holds(trainer):
            for m in self._norms:
                m.eval()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._release(pl_module)

    def _hold_or_release(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.holds(trainer):
            self._release(pl_module)
            return
        for p in self._held or ():
            p.requires_grad_(False)
        for m in self._norms:
            m.eval()

    def _release(self, pl_module: L.LightningModule) -> None:
        for p in self._held or ():
            p.requires_grad_(True)
        for m in self._norms:
            m.train(pl_module.training)
