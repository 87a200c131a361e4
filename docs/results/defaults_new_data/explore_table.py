"""The exploration table: every run under a folder, grouped by what was tried (head, the rate it
trained at, classifier BatchNorm, warm-up, other settings), with its best-epoch val top-1 error per
seed. Choices were made on val only; the test errors the runs also hold were not looked at for it.

    python docs/results/defaults_new_data/explore_table.py docs/results/defaults_new_data/explore/run_folders
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

SHOWN = ("head", "model.bn", "optim.lr", "optim.warmup_epochs", "seed")
FIXED = ("name=", "runs_dir=", "data.", "trainer.", "logger=", "data=")


def _row(run: Path) -> tuple[tuple, int, float]:
    summary = json.loads((run / "summary.json").read_text())
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    other = " ".join(o for o in overrides if not o.startswith(FIXED) and o.split("=")[0] not in SHOWN)
    optim = hparams["optim"]
    rate = (summary.get("learning_rate") or {}).get("rate", optim["lr"])  # before lr scaling: lr was the rate
    key = (
        hparams["head"]["name"],
        round(rate, 6),
        bool(hparams["model"]["bn"]),
        optim.get("warmup_epochs", 0.0),
        other,
    )
    return key, summary["seed"], summary["best"]["val/top1_err"]


def main(root: Path) -> None:
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for summary in sorted(root.rglob("summary.json")):
        if json.loads(summary.read_text())["status"] != "finished":
            print(f"(left out, not finished: {summary.parent})", file=sys.stderr)
            continue
        key, seed, err = _row(summary.parent)
        groups[key][seed] = err
    print("| head | rate at batch 64 (base for 256) | classifier BN | warm-up epochs | other | val top-1 error % per seed | mean |")
    print("|---|---|---|---|---|---|---|")
    for (head, rate, bn, warmup, other), errs in sorted(groups.items()):
        per_seed = ", ".join(f"s{s}: {100 * e:.1f}" for s, e in sorted(errs.items()))
        mean = 100 * sum(errs.values()) / len(errs)
        print(f"| {head} | {rate:g} ({rate * 4:g}) | {'yes' if bn else 'no'} | {warmup:g} | {other} | {per_seed} | {mean:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
