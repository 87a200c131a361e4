"""Entry point: `python -m gmsop.eval ckpt_path=PATH [split=test|val] [data.root=...]` evaluates a checkpoint.

The model and its data config come from the checkpoint; `data.*` keys override the latter
(e.g. another root or batch size). The test split by default (`split=val`: the hold-out that
choices were made on). Metrics are printed and written to metrics.json, and on the test split
the per-image predictions to predictions.npz (gmsop.models.predictions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gmsop.data import build_datamodule
from gmsop.errors import exit_on_user_error
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.models.factory import weights_from_checkpoint
from gmsop.models.predictions import PREDICTIONS_FILE
from gmsop.paths import CONFIG_DIR, write_text_atomic
from gmsop.registry import ConfigError
from gmsop.run.build import normalise_like_the_weights
from gmsop.run.compose import register_configs, run_entry_point
from gmsop.run.noise import quiet_known_noise
from gmsop.run_folder import CheckpointError, read_checkpoint

register_configs()


SPLITS = ("test", "val")


def evaluate(
    ckpt_path: Path,
    data_overrides: dict,
    accelerator: str = "auto",
    devices=1,
    split: str = "test",
    predictions_to: Optional[Path] = None,
) -> dict[str, float]:
    """Evaluate a checkpoint on its data set's test split (or its val hold-out); return the metrics.
    On the test split, `predictions_to` receives the per-image predictions.

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
    else:
        (metrics,) = trainer.test(model, datamodule=datamodule)
        if predictions_to is not None and trainer.is_global_zero:
            model.test_predictions.save(predictions_to)
    return {k: float(v) for k, v in metrics.items()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    quiet_known_noise()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = evaluate(
        Path(cfg.ckpt_path).expanduser(),
        OmegaConf.to_container(cfg.data),
        cfg.accelerator,
        cfg.devices,
        cfg.split,
        out_dir / PREDICTIONS_FILE,
    )
    record = {"ckpt_path": cfg.ckpt_path, "split": cfg.split, **metrics}
    write_text_atomic(out_dir / "metrics.json", json.dumps(record, indent=2))
    print(f"metrics written to {out_dir / 'metrics.json'}")


def cli() -> None:
    """`python -m gmsop.eval` and the `gmsop-eval` command."""
    run_entry_point(main)


if __name__ == "__main__":
    cli()
