"""The test stage: Lightning's test loop, once per run, on the checkpoint chosen on val.

After `fit`, the run's best.ckpt (lowest val/top1_err; see gmsop.callbacks.checkpoints) is evaluated on the
test split. The per-image predictions go to RUN/predictions.npz, then the result (checkpoint,
the split choices were made on, test metrics) to RUN/test.json; test/* also reach every
logger and summary.json. A run interrupted before test.json exists runs its test stage when
resumed; one that has it never tests again (`trainer.resume` of a finished run only reports).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import lightning as L

from gmsop.data import ImageDataModule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.models.predictions import PREDICTIONS_FILE
from gmsop.paths import write_text_atomic
from gmsop.run_folder import TEST_RESULT, read_test_result


def test_once(
    trainer: L.Trainer,
    model: SecondOrderClassifier,
    datamodule: ImageDataModule,
    checkpoint: Optional[str],
    run_dir: Path,
) -> dict[str, Any]:
    """Test `checkpoint` (the current weights if None: no validation chose one) unless this run
    folder already has; return the test record."""
    done = read_test_result(run_dir)
    if done is not None:
        if trainer.is_global_zero:
            print(f"test stage already ran ({run_dir / TEST_RESULT}); not tested again")
        return done
    trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint, verbose=trainer.is_global_zero)
    predictions = model.test_predictions
    result = {
        "checkpoint": checkpoint or "the last weights (no validation chose a checkpoint)",
        "selected_on": datamodule.selected_on,
        "images": len(predictions.index),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
        "predictions": PREDICTIONS_FILE,
    }
    if trainer.is_global_zero:
        predictions.save(run_dir / PREDICTIONS_FILE)
        write_text_atomic(run_dir / TEST_RESULT, json.dumps(result, indent=2))
    return result
