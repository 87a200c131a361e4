"""Entry point: `python -m gmsop.eval ckpt_path=PATH [data.root=...]` evaluates a checkpoint.

The model and its data config come from the checkpoint; `data.*` keys override the latter
(e.g. another root or batch size). Metrics are printed and written to metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gmsop.config import register_configs
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.paths import CONFIG_DIR, write_text_atomic

register_configs()


def evaluate(ckpt_path: Path, data_overrides: dict, accelerator: str = "auto", devices=1) -> dict[str, float]:
    """Validate a checkpoint on its data set's validation split; return the metrics."""
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    data_cfg = dict(ckpt["hyper_parameters"].get("data") or {})
    if not data_cfg:
        raise ValueError(f"{ckpt_path} holds no data config; pass the full data.* config")
    data_cfg.update(data_overrides)
    datamodule = build_datamodule(data_cfg)
    model = SecondOrderClassifier.load_from_checkpoint(ckpt_path, map_location="cpu")
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False)
    (metrics,) = trainer.validate(model, datamodule=datamodule)
    return {k: float(v) for k, v in metrics.items()}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = evaluate(
        Path(cfg.ckpt_path).expanduser(), OmegaConf.to_container(cfg.data), cfg.accelerator, cfg.devices
    )
    write_text_atomic(out_dir / "metrics.json", json.dumps({"ckpt_path": cfg.ckpt_path, **metrics}, indent=2))
    print(f"metrics written to {out_dir / 'metrics.json'}")


if __name__ == "__main__":
    main()
