"""Entry point: `python -m gmsop.train experiment=NAME key=value ...` (Hydra; `-m` for grids)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gmsop.errors import exit_on_user_error
from gmsop.paths import CONFIG_DIR
from gmsop.run.compose import register_configs, run_entry_point
from gmsop.run.training import RunInterrupted, own_wandb_service, run_training

register_configs()
own_wandb_service()


def _config_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra would write to RUN/.hydra/ (it is told not to: gmsop writes them once the folder is checked)."""
    hydra_cfg = HydraConfig.get()
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task))),
    }


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """Train one run; return the best validation top-1 error (what sweeps minimise)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_training(cfg, run_dir, config_files=_config_files(cfg))
    except RunInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        sys.exit(e.exit_code)  # non-zero, so a scheduler sees the job did not finish
    print(f"\nrun folder:   {result.run_dir}")
    print(f"checkpoint:   {result.best_checkpoint} (last: {result.run_dir / 'checkpoints' / 'last.ckpt'})")
    if result.wandb_dir:
        print(f"W&B (offline): {result.wandb_dir}  -> upload later with `wandb sync {result.wandb_dir}`")
    print(f"summary:      {result.run_dir / 'summary.json'}")
    nan = float("nan")
    last, best = result.metrics, result.best or {}
    print(
        f"val top-1 error {best.get('val/top1_err', nan):.4f}, top-5 error {best.get('val/top5_err', nan):.4f} "
        f"(best epoch: {best.get('epoch', '-')}); last epoch {last.get('val/top1_err', nan):.4f} / "
        f"{last.get('val/top5_err', nan):.4f}"
    )
    return best.get("val/top1_err", nan)


if __name__ == "__main__":
    run_entry_point(main)
