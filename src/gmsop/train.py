"""Entry point: `python -m gmsop.train experiment=NAME key=value ...` (Hydra; `-m` for grids)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gmsop.errors import UserError, exit_on_user_error
from gmsop.paths import CONFIG_DIR
from gmsop.run.compose import register_configs, run_entry_point
from gmsop.run.loggers import own_wandb_service
from gmsop.run.training import RunInterrupted, run_training

register_configs()
own_wandb_service()


def _config_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra would write to RUN/.hydra/ (it is told not to: gmsop writes them once the folder is checked)."""
    hydra_cfg = HydraConfig.get()
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task))),
    }


FAILED_JOBS: list[str] = []  # a multirun's jobs that failed on bad input (listed when it ends)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """Train one run; return the best validation top-1 error (what sweeps minimise).

    In a multirun (-m, e.g. an ablation grid), bad input for one job (a value its head refuses,
    a data set that is not there, a folder in use) fails that job only: the message is printed,
    the next job runs, and the command exits 2 at the end, listing the failed jobs."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = run_training(cfg, run_dir, config_files=_config_files(cfg), hold_signals_after=True)
    except RunInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        sys.exit(e.exit_code)  # non-zero, so a scheduler sees the job did not finish
    except UserError as e:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        job, overrides = hydra_cfg.job.num, " ".join(hydra_cfg.overrides.task)
        print(f"error: job #{job} ({overrides}): {e}\n(the multirun goes on with its next job)", file=sys.stderr)
        FAILED_JOBS.append(f"#{job} ({overrides}): {e}")
        return float("nan")
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
    if "test/top1_err" in last:
        chosen = "chosen on test: data.select_on_test" if result.selected_on == "test" else "chosen on val"
        print(
            f"test top-1 error {last['test/top1_err']:.4f}, top-5 error {last['test/top5_err']:.4f} "
            f"(best.ckpt, {chosen}; per-image predictions: {result.run_dir / 'predictions.npz'})"
        )
    return best.get("val/top1_err", nan)


def cli() -> None:
    """`python -m gmsop.train` and the `gmsop-train` command."""
    run_entry_point(main)
    if FAILED_JOBS:
        print(f"\n{len(FAILED_JOBS)} job(s) failed on bad input:\n  " + "\n  ".join(FAILED_JOBS), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
