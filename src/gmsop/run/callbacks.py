"""Training callbacks shared by every run."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.model_summary import log
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from gmsop.run.curves import TRAIN_METRICS, VAL_METRICS, Curves, read_curves, write_curves


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


# curves.csv column -> its key in trainer.callback_metrics (the loss is logged per step and per epoch)
_LOGGED_AS = {"train/loss": "train/loss_epoch"}


class LearningCurves(L.Callback):
    """Per-epoch learning rate, loss and error to curves.csv and plots/curves.png, after every epoch.

    The history travels in the checkpoint (callback state), so a resumed run's curves
    start at epoch 0. Validation values are taken when validation ends; training values
    once the epoch's metrics are final (the next epoch's start, or the end of training),
    which is after the checkpoint of that epoch was written: on resume they are filled in
    from `earlier_run`'s curves.csv (the folder the checkpoint came from), for the epochs
    the checkpoint holds. Without that file the resumed-from epoch has no training values.
    """

    def __init__(self, run_dir: Path, title: str, earlier_run: Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.title = title
        self.earlier_run = earlier_run
        self.curves: Curves = {}
        self._pending_train_epoch: int | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush_train(trainer)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        if lr is not None:
            self.curves.setdefault(trainer.current_epoch, {})["lr"] = float(lr)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pending_train_epoch = trainer.current_epoch  # its metrics are logged after this hook

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, trainer.current_epoch, VAL_METRICS)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush_train(trainer)

    def _flush_train(self, trainer) -> None:
        if self._pending_train_epoch is not None:
            self._record(trainer, self._pending_train_epoch, TRAIN_METRICS)
            self._pending_train_epoch = None

    def _record(self, trainer, epoch: int, columns: tuple[str, ...]) -> None:
        logged = trainer.callback_metrics
        found = {c: float(logged[_LOGGED_AS.get(c, c)]) for c in columns if _LOGGED_AS.get(c, c) in logged}
        if not found:
            return
        self.curves.setdefault(epoch, {}).update(found)
        if trainer.is_global_zero:
            from gmsop.plots import learning_curves

            write_curves(self.run_dir, self.curves)
            learning_curves({self.title: self.curves}, self.run_dir / "plots" / "curves.png")

    def state_dict(self) -> dict:
        return {"curves": self.curves}

    def load_state_dict(self, state_dict: dict) -> None:
        self.curves = {int(e): dict(v) for e, v in state_dict["curves"].items()}
        earlier = read_curves(self.earlier_run) if self.earlier_run else {}
        for epoch, row in self.curves.items():
            known = {k: v for k, v in earlier.get(epoch, {}).items() if not math.isnan(v)}
            self.curves[epoch] = {**known, **row}  # the checkpoint's own values win


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
