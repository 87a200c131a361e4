"""Training callbacks shared by every run."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.model_summary import log
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from gmsop.run.curves import VAL_METRICS


class Throughput(L.Callback):
    """Training images per second, per epoch (logged as train/images_per_s)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0
        self._epoch_images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_images = 0
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_images += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dt = time.perf_counter() - self._t0
        self.images += self._epoch_images
        self.seconds += dt
        if dt > 0:
            pl_module.log("train/images_per_s", self._epoch_images / dt)

    def summary(self) -> dict[str, float]:
        return {"train_images_per_s": self.images / self.seconds} if self.seconds > 0 else {}


class WandbBestSummary(L.Callback):
    """The W&B run summary keeps each validation metric's minimum (the best epoch), not only its
    last value. Set when training starts: by then Lightning has created the W&B run (creating it
    earlier can find the id still held by the W&B service of a process just killed)."""

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                for key in VAL_METRICS:
                    logger.experiment.define_metric(key, summary="min")


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


class ModelSummaryWithoutFlops(ModelSummary):
    """Lightning's model summary less its FLOPs column and "Total Flops" line, which read 0 for
    every model here (Lightning counts FLOPs only for a model with an example_input_array;
    `python -m gmsop.cost` gives a run's FLOPs)."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        log.info("\n" + table.rsplit("\n", 1)[0])  # every line but the last, "Total Flops"


class RichModelSummaryWithoutFlops(ModelSummary):
    """Lightning's Rich model summary (a coloured table, `callbacks=[default,rich]`) less its
    FLOPs column and "Total FLOPs" line, for the reason given in `ModelSummaryWithoutFlops`."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            numeric = name not in (" ", "Name", "Type", "Mode")
            table.add_column(name, justify="right" if numeric else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        totals = Table.grid()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(totals)
