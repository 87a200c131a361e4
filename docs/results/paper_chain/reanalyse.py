"""An independent re-analysis of the committed per-image predictions (no gmsop code).

    python docs/results/paper_chain/reanalyse.py [docs/results/paper_chain/runs]

Reads every RUNS/HEAD_seedS/predictions.npz (index, label, top5 per test image) and recomputes,
with numpy, scipy's t quantile and exact binomial sums written out here: each head's top-1 test
error per seed, mean and 95% t-interval over seeds; for the claims' pairs, the exact McNemar p
per seed (two-sided, from the discordant counts), a paired percentile bootstrap of the error
difference over images (seed pairs averaged; its own resampling, so its ends may differ from the
report's by a few hundredths of a point) and the t-interval over seed-pair differences.
"""

from __future__ import annotations

import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import t as student_t

PAIRS = [  # (A, B): the paper claims B has fewer errors than A
    ("srsop", "parametric_srsop"),  # claim 2
    ("parametric_srsop", "gmsop"),  # claim 3, the core claim
    ("gap", "srsop"),
    ("gap", "gmsop"),
    ("sop", "srsop"),  # claim 1 (where run)
    ("gap", "gmgap"),  # claim 4 (where run)
    ("gmgap", "gmsop"),
]


def load(runs: Path) -> dict[str, dict[int, np.ndarray]]:
    """head -> seed -> bool array of correct top-1 predictions, ordered by test-image index."""
    found: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for f in sorted(runs.glob("*_seed*/predictions.npz")):
        head, seed = re.fullmatch(r"(.+)_seed(\d+)", f.parent.name).groups()
        with np.load(f) as z:
            order = np.argsort(z["index"])
            found[head][int(seed)] = (z["top5"][:, 0] == z["label"])[order]
    return found


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    n, mean = len(values), float(values.mean())
    half = student_t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar: twice the smaller binomial(n, 1/2) tail, at most 1."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def bootstrap(diff_per_image: np.ndarray, resamples: int = 10_000, seed: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(diff_per_image)
    means = np.array([diff_per_image[rng.integers(0, n, n)].mean() for _ in range(resamples)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/paper_chain/runs")
    correct = load(runs)
    print("| head | seeds | top-1 test error % per seed | mean | 95% t-interval |")
    print("|---|---|---|---|---|")
    for head, by_seed in correct.items():
        err = np.array([100 * (1 - by_seed[s].mean()) for s in sorted(by_seed)])
        mean, low, high = t_interval(err)
        print(f"| {head} | {len(err)} | {', '.join(f'{e:.2f}' for e in err)} | {mean:.2f} | [{low:.2f}, {high:.2f}] |")
    print()
    print("| A | B | error A - B (pts) | bootstrap 95% | seed-pair t 95% | McNemar p per seed (A only / B only) |")
    print("|---|---|---|---|---|---|")
    for a, b in PAIRS:
        if a not in correct or b not in correct:
            continue
        seeds = sorted(set(correct[a]) & set(correct[b]))
        a_err = np.stack([~correct[a][s] for s in seeds]).astype(float)
        b_err = np.stack([~correct[b][s] for s in seeds]).astype(float)
        per_image = (a_err - b_err).mean(0)
        low, high = bootstrap(per_image)
        _, tl, th = t_interval(100 * (a_err.mean(1) - b_err.mean(1)))
        tests = []
        for s in seeds:
            only_a = int((correct[a][s] & ~correct[b][s]).sum())
            only_b = int((~correct[a][s] & correct[b][s]).sum())
            tests.append(f"seed {s}: {mcnemar_p(only_a, only_b):.3g} ({only_a}/{only_b})")
        print(
            f"| {a} | {b} | {100 * per_image.mean():+.2f} | [{100 * low:+.2f}, {100 * high:+.2f}] "
            f"| [{tl:+.2f}, {th:+.2f}] | {'; '.join(tests)} |"
        )


if __name__ == "__main__":
    main()
