"""Entry point: `python -m gmsop.eval ckpt_path=PATH [split=test|val] [data.root=...]` evaluates a checkpoint.

The model and its data config come from the checkpoint; `data.*` keys override the latter
(e.g. another root or batch size). The test split by default (`split=val`: the hold-out that
choices were made on). Metrics are printed and written to metrics.json, and on the test split
the per-image predictions to predictions.npz (gmsop.models.predictions).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gmsop.config import EvalConfig, check_known_keys
from gmsop.errors import exit_on_user_error
from gmsop.models.predictions import PREDICTIONS_FILE
from gmsop.paths import CONFIG_DIR, write_text_atomic
from gmsop.run.compose import register_configs, run_entry_point
from gmsop.run.evaluate import evaluate
from gmsop.run.noise import quiet_known_noise
from gmsop.stop_signals import stop_signals_end, stop_signals_wait

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@exit_on_user_error
@stop_signals_end("the evaluation")
def main(cfg: DictConfig) -> None:
    check_known_keys(cfg, EvalConfig, "gmsop.eval")
    quiet_known_noise()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics, predictions = evaluate(
        Path(cfg.ckpt_path).expanduser(), OmegaConf.to_container(cfg.data), cfg.accelerator, cfg.devices, cfg.split
    )
    record = {"ckpt_path": cfg.ckpt_path, "split": cfg.split, **metrics}
    with stop_signals_wait():  # both files or neither
        if predictions is not None:
            predictions.save(out_dir / PREDICTIONS_FILE)
        write_text_atomic(out_dir / "metrics.json", json.dumps(record, indent=2))
    print(f"metrics written to {out_dir / 'metrics.json'}")


def cli() -> None:
    """`python -m gmsop.eval` and the `gmsop-eval` command."""
    run_entry_point(main)


if __name__ == "__main__":
    cli()
