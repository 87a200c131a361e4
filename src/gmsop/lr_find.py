"""Entry point: `python -m gmsop.lr_find experiment=NAME key=value ... [--steps 100]` suggests optim.lr.

Lightning's learning-rate finder (`Tuner.lr_find`) on the composed training config: `--steps`
training steps with the learning rate growing exponentially from --min-lr to --max-lr (every
part's group alike), the loss recorded at each. It prints the suggestion (the steepest descent
of the smoothed loss) and writes the curve to OUT/lr_find.png and the numbers to
OUT/lr_find.json. Nothing of a run is written: no checkpoints, no logs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import OmegaConf

from gmsop.data import build_datamodule
from gmsop.errors import exit_on_user_error
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.paths import replace_atomically, write_text_atomic
from gmsop.registry import ConfigError
from gmsop.run.compose import compose_train


def find_lr(overrides: list[str], out: Path, min_lr: float, max_lr: float, steps: int) -> dict[str, Any]:
    """Run the finder; return {suggestion, lrs, losses} (suggestion None when the curve has none)."""
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"need 0 < --min-lr < --max-lr, got {min_lr} and {max_lr}")
    if steps < 10:
        raise ConfigError(f"--steps={steps}; the finder needs at least 10 steps to suggest anything")
    cfg = compose_train(overrides)
    L.seed_everything(cfg.seed, workers=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    datamodule = build_datamodule(container["data"])
    model = SecondOrderClassifier(
        container["model"], container["head"], container["optim"], datamodule.num_classes, datamodule.num_channels
    )
    with tempfile.TemporaryDirectory(prefix="gmsop-lr-find-") as scratch:
        trainer = L.Trainer(
            accelerator=cfg.trainer.get("accelerator", "auto"),
            devices=1,
            precision=cfg.trainer.get("precision", "32-true"),
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            default_root_dir=scratch,
        )
        finder = Tuner(trainer).lr_find(
            model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=steps, update_attr=False
        )
    if finder is None:
        raise ConfigError("the learning-rate finder returned nothing (no training batches?)")
    suggestion = finder.suggestion()
    result = {"suggestion": suggestion, "lrs": finder.results["lr"], "losses": finder.results["loss"]}
    out.mkdir(parents=True, exist_ok=True)
    fig = finder.plot(suggest=suggestion is not None, show=False)
    fig.axes[0].set_title(" ".join(overrides) or "default experiment", fontsize=9)
    replace_atomically(out / "lr_find.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    write_text_atomic(out / "lr_find.json", json.dumps({"overrides": overrides, **result}, indent=2))
    return result


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for gmsop.train (e.g. head=sop data=digits)")
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("lr_find"))
    args = p.parse_args()
    result = find_lr(args.overrides, args.out, args.min_lr, args.max_lr, args.steps)
    print(f"curve: {args.out / 'lr_find.png'} (numbers: {args.out / 'lr_find.json'})")
    if result["suggestion"] is None:
        print("no suggestion: the loss never fell steadily; widen --min-lr/--max-lr or take more --steps")
    else:
        print(f"suggested learning rate: {result['suggestion']:.3g}  ->  optim.lr={result['suggestion']:.3g}")


if __name__ == "__main__":
    main()
