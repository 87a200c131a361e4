"""Evaluating a checkpoint on its data set's test split (or its val hold-out), as training's test stage does."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L

from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.models.factory import weights_from_checkpoint
from gmsop.models.predictions import Predictions
from gmsop.registry import ConfigError
from gmsop.run.build import normalise_like_the_weights
from gmsop.run_folder import CheckpointError, read_checkpoint

SPLITS = ("test", "val")


def evaluate(
    ckpt_path: Path,
    data_overrides: dict,
    accelerator: str = "auto",
    devices=1,
    split: str = "test",
) -> tuple[dict[str, float], Optional[Predictions]]:
    """Evaluate a checkpoint on its data set's test split (or its val hold-out); return the metrics
    and, on the test split, the per-image predictions (None on val). Nothing is written.

    Refuses (CheckpointError, naming the file) a file that is not a gmsop checkpoint, and data
    whose class count or channel count differs from what the model was trained for.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; allowed: {', '.join(SPLITS)}")
    ckpt = read_checkpoint(ckpt_path)
    hparams = ckpt["hyper_parameters"]
    data_cfg = dict(hparams.get("data") or {})
    if not data_cfg and "name" not in data_overrides:
        raise CheckpointError(f"{ckpt_path} holds no data config; pass the full data.* config (data.name=...)")
    data_cfg.update(data_overrides)
    datamodule = build_datamodule(data_cfg)
    for what, model_has, data_has in (
        ("classes", hparams["num_classes"], datamodule.num_classes),
        ("input channels", hparams["in_chans"], datamodule.num_channels),
    ):
        if model_has != data_has:
            raise CheckpointError(
                f"{ckpt_path} was trained for {model_has} {what}, but data "
                f"{data_cfg['name']!r} has {data_has}; evaluate it on data like its training data"
            )
    with weights_from_checkpoint():
        model = SecondOrderClassifier(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    normalise_like_the_weights(model, datamodule)  # as in training
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False)
    if split == "val":
        (metrics,) = trainer.validate(model, datamodule=datamodule)
        predictions = None
    else:
        (metrics,) = trainer.test(model, datamodule=datamodule)
        predictions = model.test_predictions
    return {k: float(v) for k, v in metrics.items()}, predictions
