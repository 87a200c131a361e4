"""How many training batches the BatchNorm statistics pass needs (model.precise_bn_batches), and what
it costs: chosen on the data the other defaults were chosen on (a Fashion-MNIST *training-file*
subset, 32x32, batch 64), never on the study's folders.

1. GAP and GM-SOP-16-8 at their defaults, seeds 0 and 1, 3 epochs, without the pass (runs under
   choose/run_folders; skipped when already there).
2. For each run's last.ckpt (the weights after the last step): val top-1 error with the statistics as
   trained, and re-estimated over N = 1, 2, 5, 10, 20, 40 batches and over every training batch (63);
   the pass's time against the run's time per training epoch.

    python docs/results/precise_bn/choose_batches.py   # writes choose/table.md and choose/results.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from gmsop.callbacks.precise_bn import reestimate_batchnorm
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run_folder import read_checkpoint

HERE = Path(__file__).resolve().parent
RUNS = HERE / "choose" / "run_folders"
DATA = [
    "data=fashion_mnist",
    "data.train_subset=4000",
    "data.val_size=1000",
    "data.test_subset=2000",
    "data.image_size=32",
    "data.batch_size=64",
]
COUNTS = (1, 2, 5, 10, 20, 40, None)  # None: every training batch


def train() -> None:
    if list(RUNS.rglob("last.ckpt")):  # (the committed run folders keep no checkpoints: rerunning retrains)
        return
    subprocess.run(
        [sys.executable, "-m", "gmsop.train", "-m", "name=choose", f"runs_dir={RUNS}", "head=gap,gmsop", "seed=0,1",
         "trainer.max_epochs=3", "trainer.test=false", "logger=no_wandb", "trainer.enable_progress_bar=false", *DATA],
        check=True,
    )  # fmt: skip


@torch.no_grad()
def val_error(model: SecondOrderClassifier, datamodule) -> float:
    model.eval()
    wrong = total = 0
    for images, labels in datamodule.val_dataloader():
        logits = model(datamodule.transform(images, training=False))
        wrong += int((logits.argmax(1) != labels).sum())
        total += len(labels)
    return 100.0 * wrong / total


def measure(run: Path) -> dict:
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    summary = json.loads((run / "summary.json").read_text())
    datamodule = build_datamodule(ckpt["hyper_parameters"]["data"])
    datamodule.load_state_dict(ckpt[type(datamodule).__name__])
    datamodule.setup("fit")
    model = SecondOrderClassifier(**ckpt["hyper_parameters"])
    result = {"run": run.name, "head": summary["head"]["name"], "seed": summary["seed"]}
    model.load_state_dict(ckpt["state_dict"])
    result["as trained"] = val_error(model, datamodule)
    epoch_s = summary["wall_s"] / max(1, summary["epochs"])  # (validation and start-up included: an upper bound)
    every = datamodule.train_batches_per_epoch(1)
    for n in COUNTS:
        model.load_state_dict(ckpt["state_dict"])
        start = time.perf_counter()
        reestimate_batchnorm(model, datamodule.statistics_batches(n or every, epoch=ckpt["epoch"]))
        seconds = time.perf_counter() - start
        key = f"N={n or every}" + ("" if n else " (all)")
        result[key] = val_error(model, datamodule)
        result[f"{key} s"] = seconds
        result[f"{key} share of an epoch"] = seconds / epoch_s
    return result


def main() -> None:
    train()
    results = [measure(ckpt.parent.parent) for ckpt in sorted(RUNS.rglob("last.ckpt"))]
    (HERE / "choose" / "results.json").write_text(json.dumps(results, indent=1))
    keys = ["as trained"] + [k for k in results[0] if k.startswith("N=") and not k.endswith(("s", "epoch"))]
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in results:
        lines.append(f"| {r['head']} seed {r['seed']} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    shares = [k for k in results[0] if k.endswith("share of an epoch")]
    lines += ["", "| pass | " + " | ".join(k.split(" share")[0] for k in shares) + " |", "|---|" + "---|" * len(shares)]
    for r in results:
        lines.append(f"| {r['head']} seed {r['seed']} | " + " | ".join(f"{100 * r[k]:.1f}%" for k in shares) + " |")
    (HERE / "choose" / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
