"""Lightning's model summaries, less the FLOPs they cannot count here."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.model_summary import log
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from gmsop.callbacks.lightning_internals import format_summary_table


class ModelSummaryWithoutFlops(ModelSummary):
    """Lightning's model summary less its FLOPs column and "Total Flops" line, which read 0 for
    every model here (Lightning counts FLOPs only for a model with an example_input_array;
    `python -m gmsop.cost` gives a run's FLOPs)."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = format_summary_table(
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
