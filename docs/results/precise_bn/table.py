"""The precise-BN study's tables from its run folders (run_study.sh):

1. per folder and head, before (running statistics) and after (re-estimated over 20 batches): test
   top-1 error over 5 seeds (mean, 95% t-interval, worst seed), chosen on val and tested once;
2. the criteria: GM-SOP-16-8's worst seed against GAP's mean (within 2 points?), and the largest
   epoch-to-epoch val jump after the first epoch (over 5 points?);
3. GM-SOP's val error at each epoch, as evaluated before and after, per seed (the same weights: the
   pass changes no training step, which the training losses confirm here, epoch by epoch).

    python docs/results/precise_bn/table.py > docs/results/precise_bn/study/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gmsop.analysis.stats import seed_summary
from gmsop.run_folder import read_curves

HERE = Path(__file__).resolve().parent
RUNS = HERE / "study" / "run_folders"
FOLDERS = ("fashion_t10k", "digits28", "textures")
HEADS = ("gap", "gmsop")
ARMS = ("before", "after")


def runs(folder: str, arm: str) -> dict[tuple[str, int], Path]:
    """(head, seed) -> run folder, for the finished runs of one multirun."""
    found = {}
    for summary in sorted((RUNS / f"{folder}_{arm}").glob("*/*/summary.json")):
        s = json.loads(summary.read_text())
        if s["status"] == "finished":
            found[(s["head"]["name"], s["seed"])] = summary.parent
    return found


def test_error(run: Path) -> float:
    return 100 * json.loads((run / "summary.json").read_text())["metrics"]["test/top1_err"]


def val_curve(run: Path) -> list[float]:
    return [100 * v["val/top1_err"] for _, v in sorted(read_curves(run).items())]


def train_losses(run: Path) -> list[float]:
    return [v["train/loss"] for _, v in sorted(read_curves(run).items())]


def main() -> None:
    out = ["| folder | head | statistics | seeds | test top-1 error % (mean) | 95% t-interval | worst seed | "
           "largest val jump after epoch 1 (pts) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    verdicts = []
    for folder in FOLDERS:
        for arm in ARMS:
            found = runs(folder, arm)
            means = {}
            for head in HEADS:
                seeds = sorted(s for h, s in found if h == head)
                if not seeds:
                    continue
                errors = [test_error(found[(head, s)]) for s in seeds]
                jumps = [
                    max((abs(b - a) for a, b in zip(c[1:], c[2:])), default=0.0)
                    for c in (val_curve(found[(head, s)]) for s in seeds)
                ]
                summary = seed_summary(errors)
                means[head] = (summary.mean, max(errors), max(jumps))
                out.append(
                    f"| {folder} | {head} | {arm} | {len(seeds)} | {summary.mean:.2f} | "
                    f"[{summary.low:.2f}, {summary.high:.2f}] | {max(errors):.2f} | {max(jumps):.1f} |"
                )
            if set(means) == set(HEADS):
                gap_mean, (_, worst, jump) = means["gap"][0], means["gmsop"]
                verdicts.append(
                    f"| {folder} | {arm} | {worst - gap_mean:+.2f} | {'yes' if worst - gap_mean <= 2 else 'no'} | "
                    f"{jump:.1f} | {'yes' if jump <= 5 else 'no'} |"
                )
    out += ["", "| folder | statistics | GM-SOP worst seed minus GAP mean (pts) | within 2? | "
            "GM-SOP's largest val jump after epoch 1 (pts) | within 5? |", "|---|---|---|---|---|---|", *verdicts]  # fmt: skip
    out += ["", "| folder | seed | val error per epoch, before (running statistics) | after (re-estimated) | "
            "training losses equal in both |", "|---|---|---|---|---|"]  # fmt: skip
    for folder in FOLDERS:
        before, after = runs(folder, "before"), runs(folder, "after")
        for head, seed in sorted(k for k in before if k in after and k[0] == "gmsop"):
            a, b = before[(head, seed)], after[(head, seed)]
            same = train_losses(a) == train_losses(b)
            out.append(
                f"| {folder} | {seed} | {' / '.join(f'{v:.1f}' for v in val_curve(a))} | "
                f"{' / '.join(f'{v:.1f}' for v in val_curve(b))} | {'yes' if same else 'NO'} |"
            )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
