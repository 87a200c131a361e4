"""Entry point: `python -m gmsop.train experiment=NAME key=value ...` (Hydra; `-m` for grids)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gmsop.config import register_configs
from gmsop.paths import CONFIG_DIR
from gmsop.training import run_training

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Train one run; return the best validation top-1 error (what sweeps minimise)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run_training(cfg, run_dir)
    print(f"\nrun folder:   {result.run_dir}")
    print(f"checkpoint:   {result.best_checkpoint} (last: {result.run_dir / 'checkpoints' / 'last.ckpt'})")
    if result.wandb_dir:
        print(f"W&B (offline): {result.wandb_dir}  -> upload later with `wandb sync {result.wandb_dir}`")
    print(f"summary:      {result.run_dir / 'summary.json'}")
    err = result.metrics.get("val/top1_err", float("nan"))
    print(f"val top-1 error {err:.4f}, top-5 error {result.metrics.get('val/top5_err', float('nan')):.4f}")
    return err


if __name__ == "__main__":
    main()
