"""Training callbacks shared by every run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, ThroughputMonitor
from lightning.pytorch.callbacks.model_summary import log
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from gmsop.run.curves import VAL_METRICS


def _images(batch) -> int:
    return len(batch[1])


class TrainingThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor for training: every log_every_n_steps, the images and seconds
    of training so far in this process (train/samples, train/time) and, once `window` batches
    have passed, images/s over the last `window` (train/device/samples_per_sec; with several
    processes also train/samples_per_sec); and the whole run's images/s for summary.json.

    Validation is timed (Lightning takes its time out of training time) but not logged: Lightning
    logs it with validation batch numbers as steps, which would interleave with the training
    steps of the CSV log.
    """

    def __init__(self, window: int = 10) -> None:
        super().__init__(batch_size_fn=_images, window_size=window)

    def _compute(self, trainer, iter_num: int | None = None) -> None:
        if trainer.state.stage == RunningStage.TRAINING:
            super()._compute(trainer, iter_num)

    def summary(self) -> dict[str, float]:
        """{"train_images_per_s": images/s over all training steps of this process} ({} before any)."""
        throughput = self._throughputs.get(RunningStage.TRAINING)
        if throughput is None or not throughput._time or throughput._time[-1] <= 0:
            return {}
        so_far = throughput.compute()
        return {"train_images_per_s": so_far["samples"] * throughput.world_size / so_far["time"]}


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
