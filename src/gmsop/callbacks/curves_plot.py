"""The run's learning curves as a picture, redrawn each epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from gmsop.run_folder.log import read_curves


class CurvesPlot(L.Callback):
    """plots/curves.png (loss, error and learning rate per epoch) from the run's CSV log, redrawn
    as each epoch starts (the previous epoch's values are logged by then) and when training ends."""

    def __init__(self, run_dir: Path, title: str) -> None:
        self.run_dir, self.title = Path(run_dir), title

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self.draw(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.draw(trainer)

    def draw(self, trainer) -> None:
        if not trainer.is_global_zero:  # (the CSV log is rank 0's)
            return
        curves = read_curves(self.run_dir)
        if curves:
            from gmsop.plots import learning_curves

            learning_curves({self.title: curves}, self.run_dir / "plots" / "curves.png")
