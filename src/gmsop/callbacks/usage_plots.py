"""Pictures of a gated head's component usage, each epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class ComponentUsagePlots(L.Callback):
    """Pictures of a gated head's component usage after every epoch, to see whether gates collapse.

    The model accumulates and logs the numbers (usage/SPLIT/cNN, gate/SPLIT/cNN,
    usage/SPLIT/active, usage/SPLIT/max_share); this callback draws
    plots/component_usage_SPLIT.png and a W&B bar chart from them. Chosen by config
    (`callbacks.component_usage`); does nothing for heads that do not route.
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._draw(trainer, pl_module, "val")

    def _draw(self, trainer, pl_module, split: str) -> None:
        usage = pl_module.component_usage(split) if hasattr(pl_module, "component_usage") else None
        if usage is None or not trainer.is_global_zero:  # (computed on every process: it synchronises)
            return
        from gmsop.plots import component_usage_figure

        k = round(float(usage.usage.sum()))
        out = Path(trainer.default_root_dir) / "plots" / f"component_usage_{split}.png"
        title = f"{split}, epoch {trainer.current_epoch}: K={k} of N={usage.usage.numel()} per image"
        component_usage_figure(usage.usage.tolist(), usage.mean_gate.tolist(), k, title, out)
        self._wandb_bar(trainer, split, usage.usage)

    @staticmethod
    def _wandb_bar(trainer, split: str, usage: torch.Tensor) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                table = wandb.Table(
                    data=[[f"c{i:02d}", u] for i, u in enumerate(usage.tolist())], columns=["component", "usage"]
                )
                logger.experiment.log(
                    {
                        f"{split}/component_usage": wandb.plot.bar(
                            table, "component", "usage", title=f"{split} component usage"
                        ),
                        "trainer/global_step": trainer.global_step,
                    }
                )
