"""The statistics a comparison of runs needs, from scipy (nothing hand-rolled).

- Over seeds (runs that differ only in `seed`): mean, sample standard deviation and a 95%
  Student-t interval of the mean (`seed_summary`).
- One run on n test images: the exact (Clopper-Pearson) 95% binomial interval of its error
  (`binomial_interval`).
- Two configurations on the same test images: the exact McNemar test per seed pair (a two-sided
  binomial test on the discordant images: A right and B wrong, A wrong and B right;
  `mcnemar_exact`), and a paired bootstrap interval of the error difference (`paired_bootstrap`):
  per test image, the error indicator's difference averaged over the seed pairs, resampled over
  images with scipy.stats.bootstrap (percentile interval, 10,000 resamples, seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
from scipy import stats

LEVEL = 0.95
RESAMPLES = 10_000


class SeedSummary(NamedTuple):
    n: int
    mean: float
    sd: float  # sample standard deviation (ddof 1); nan for one run
    low: float  # 95% t-interval of the mean; nan for one run
    high: float


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean, sd and 95% t-interval of the mean over seeds."""
    x = np.asarray(values, dtype=np.float64)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return SeedSummary(n, mean, float("nan"), float("nan"), float("nan"))
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return SeedSummary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(LEVEL, df=n - 1, loc=mean, scale=stats.sem(x))
    return SeedSummary(n, mean, sd, float(low), float(high))


def binomial_interval(errors: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95% interval of an error rate of `errors` in `n` images."""
    ci = stats.binomtest(int(errors), int(n)).proportion_ci(confidence_level=LEVEL, method="exact")
    return float(ci.low), float(ci.high)


class McNemar(NamedTuple):
    only_a_right: int  # images A classifies correctly and B does not
    only_b_right: int
    p_value: float  # exact two-sided


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """The exact McNemar test of two classifiers on the same images (bool arrays, same order)."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs the same images: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    return McNemar(only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue))


class Difference(NamedTuple):
    estimate: float  # error(A) - error(B), averaged over the seed pairs
    low: float
    high: float


def paired_bootstrap(a_errors: np.ndarray, b_errors: np.ndarray, seed: int = 0) -> Difference:
    """95% paired bootstrap interval of error(A) - error(B): `a_errors`, `b_errors` are S x N
    (seed pairs x test images) 0/1 error indicators on the same images."""
    a, b = np.atleast_2d(np.asarray(a_errors, np.float64)), np.atleast_2d(np.asarray(b_errors, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"a paired bootstrap needs the same seed pairs and images: {a.shape} vs {b.shape}")
    per_image = (a - b).mean(axis=0)
    estimate = float(per_image.mean())
    if np.all(per_image == per_image[0]):  # no spread: every resample gives the same value
        return Difference(estimate, estimate, estimate)
    result = stats.bootstrap(
        (per_image,),
        np.mean,
        confidence_level=LEVEL,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Difference(estimate, float(result.confidence_interval.low), float(result.confidence_interval.high))


def paired_seed_interval(a_values: Sequence[float], b_values: Sequence[float]) -> Optional[SeedSummary]:
    """Mean and 95% t-interval of the per-seed-pair differences A - B (None below two pairs)."""
    if len(a_values) < 2:
        return None
    return seed_summary(np.asarray(a_values, np.float64) - np.asarray(b_values, np.float64))
