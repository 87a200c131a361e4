"""Collect finished runs into tables and plots: `python -m gmsop.report FOLDER [--out DIR] [--compare A B]`.

Reads every run folder under FOLDER (summary.json, .hydra/, the CSV log csv/metrics.csv for
learning curves and component usage, predictions.npz for paired tests); no W&B server is
needed. Runs that differ only in their seed form one configuration. Writes to DIR (default
FOLDER/report): report.md; report.csv (per configuration: test error with its 95% interval,
gmsop.analysis.stats); runs.csv (per run); comparisons.csv (configurations tested on the same
images, paired: McNemar and bootstrap); errors.png (with the intervals); curves.png and, for
gated mixtures, component_usage.png.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import OmegaConf

from gmsop.analysis.published import Published, match
from gmsop.analysis.stats import (
    Difference,
    McNemar,
    SeedSummary,
    binomial_interval,
    mcnemar_exact,
    paired_bootstrap,
    paired_seed_interval,
    seed_summary,
)
from gmsop.errors import UserError
from gmsop.models.predictions import PREDICTIONS_FILE, Predictions
from gmsop.models.usage import usage_entropy, usage_key
from gmsop.paths import write_csv_atomic, write_text_atomic
from gmsop.run_folder import (
    SUMMARY,
    Curves,
    best_epoch,
    checkpoint_files,
    continuation_of,
    curves_from_log,
    is_locked,
    read_log,
    run_folder_of,
)

UsageHistory = dict[str, dict[int, list[float]]]  # split -> epoch -> usage per component
IGNORED_OVERRIDE_PREFIXES = ("runs_dir=", "hydra.", "trainer.enable_progress_bar")


@dataclass
class Run:
    folder: Path
    label: str
    summary: dict
    published: Optional[Published]
    usage_history: UsageHistory  # a gated head's usage per split and epoch ({} for other heads)
    curves: Curves  # per-epoch loss and error ({} for a run without a CSV log)
    seed: Optional[int] = None
    group: str = ""  # the configuration: the label without the seed

    @property
    def test(self) -> dict:
        """The test stage's metrics (test/top1_err, ...); {} for a run without one."""
        return (self.summary.get("test") or {}).get("metrics") or {}

    @property
    def test_images(self) -> Optional[int]:
        return (self.summary.get("test") or {}).get("images")

    @property
    def selected_on(self) -> str:
        """The split best.ckpt was chosen on. Runs made before val was held out chose on the data
        set's evaluation split, which is now the test split."""
        return self.summary.get("selected_on") or "test (before val hold-outs)"

    def predictions(self) -> Optional[Predictions]:
        path = self.folder / PREDICTIONS_FILE
        return Predictions.load(path) if path.is_file() else None

    @property
    def usage(self) -> Optional[list[float]]:
        """Validation usage per component at the last epoch (None for heads that do not route)."""
        val = self.usage_history.get("val")
        return val[max(val)] if val else None

    def metric(self, key: str) -> Optional[float]:
        """The last epoch's value."""
        value = self.summary["metrics"].get(key)
        return None if value is None else float(value)

    @property
    def best(self) -> dict:
        """The best epoch (lowest val/top1_err) and its validation values; from the curves for
        runs made before summary.json had it; {} if no epoch was validated."""
        return self.summary.get("best") or best_epoch(self.curves) or {}


def _overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return [o for o in items or [] if not o.startswith(IGNORED_OVERRIDE_PREFIXES)]


def _seed(folder: Path, summary: dict) -> Optional[int]:
    """The run's seed: summary.json's, else the saved run config's (None if neither says)."""
    if summary.get("seed") is not None:
        return int(summary["seed"])
    path = folder / ".hydra" / "config.yaml"
    if path.is_file():
        seed = OmegaConf.load(path).get("seed")
        return None if seed is None else int(seed)
    return None


def _usage_history(rows: list[dict[str, str]]) -> UsageHistory:
    """A gated head's usage per component, per split and epoch, from the rows of the run's CSV log
    ({} for other heads)."""
    history: UsageHistory = {}
    for split in ("train", "val"):
        for row in rows:
            if row.get(usage_key(split, 0)) and row.get("epoch"):
                n = next(i for i in range(len(row) + 1) if not row.get(usage_key(split, i)))
                history.setdefault(split, {})[int(float(row["epoch"]))] = [
                    float(row[usage_key(split, i)]) for i in range(n)
                ]
    return history


class NoFinishedRuns(UserError, FileNotFoundError):
    """A folder holds no finished run to report."""


@dataclass
class Skipped:
    folder: Path
    why: str


def collect(root: Path) -> tuple[list[Run], list[Skipped]]:
    """Every finished run (summary.json with status finished) under root, labelled by what differs;
    and the run folders left out (interrupted, failed, killed, continued in another folder, or
    unreadable), with the reason."""
    summaries, skipped = {}, []
    for path in sorted(p for p in root.rglob(SUMMARY) if "report" not in p.relative_to(root).parts):
        try:
            s = json.loads(path.read_text())
            if not isinstance(s, dict) or "metrics" not in s or "head" not in s:
                raise ValueError("not a gmsop run summary")
        except (ValueError, OSError) as e:
            skipped.append(Skipped(path.parent, f"unreadable {path.name} ({type(e).__name__}: {e})"))
            continue
        status = s.get("status", "finished")  # runs made before status existed only wrote it when finished
        continued = continuation_of(path.parent)
        if continued:  # its epochs are part of that run's record: one training, one row
            skipped.append(Skipped(path.parent, f"continued in {continued.get('run_dir')} ({status} here)"))
            continue
        if status != "finished":
            skipped.append(
                Skipped(
                    path.parent,
                    f"{status}"
                    + (f" ({s['error']})" if s.get("error") else "")
                    + f" at epoch {s.get('epochs')}, step {s.get('global_step')}",
                )
            )
            continue
        summaries[path.parent] = s
    for folder in sorted({run_folder_of(p) for p in root.rglob("*.ckpt")}):
        if folder not in summaries and not (folder / SUMMARY).is_file() and checkpoint_files(folder):
            state = "running now" if is_locked(folder) else "killed before it could write summary.json"
            skipped.append(Skipped(folder, f"no summary.json ({state}); resume with trainer.resume={folder}"))
    if not summaries:
        why = "".join(f"\n  {k.folder}: {k.why}" for k in skipped)
        raise NoFinishedRuns(f"no finished runs (summary.json) under {root}{why}")
    folders = list(summaries)
    seeds = {f: _seed(f, summaries[f]) for f in folders}
    # the configuration: what the overrides set, less the seed (runs that differ only in seed are one row)
    overrides = {f: [o for o in _overrides(f) if not o.lstrip("+").startswith("seed=")] for f in folders}
    common = set.intersection(*(set(o) for o in overrides.values())) if len(folders) > 1 else set()
    # runs of several experiments: each label starts with its experiment's name (the experiment's
    # own override is then not repeated)
    names = {s["name"] for s in summaries.values()}
    configurations = {}
    for f, s in summaries.items():
        varying = [o for o in overrides[f] if o not in common and not o.startswith("experiment=")]
        label = " ".join(([s["name"]] if len(names) > 1 else []) + varying)
        configurations[f] = label or (s["head"]["name"] if len(folders) > 1 else s["name"])
    groups = _seed_groups(configurations, seeds, summaries, root)
    runs = []
    for f, s in summaries.items():
        log = read_log(f)  # read once: usage and curves both come from it
        published = match(s["name"], s["data"], s["backbone"], s["head"])
        alone = sum(g == groups[f] for g in groups.values()) == 1
        label = groups[f] if alone else f"{groups[f]} seed={seeds[f]}"
        runs.append(Run(f, label, s, published, _usage_history(log), curves_from_log(log), seeds[f], groups[f]))
    return runs, skipped


def _seed_groups(
    labels: dict[Path, str], seeds: dict[Path, Optional[int]], summaries: dict[Path, dict], root: Path
) -> dict[Path, str]:
    """Runs of one configuration form one group when their seeds are known and all differ; runs
    that repeat a seed (or do not say theirs) stay apart, told apart by their folder: no run is ever
    merged away or averaged with its own repeat."""
    out = dict(labels)
    for group in _shared(out):
        known = [seeds[f] for f in group]
        if None in known or len(set(known)) < len(known):
            for f in group:
                out[f] = f"{out[f]} [{os.path.relpath(f, root)}]"
    return out


def _shared(labels: dict[Path, str]) -> list[list[Path]]:
    by_label: dict[str, list[Path]] = {}
    for f, label in labels.items():
        by_label.setdefault(label, []).append(f)
    return [g for g in by_label.values() if len(g) > 1]


@dataclass
class Configuration:
    """Runs that differ only in their seed (one run when no seeds were varied)."""

    label: str
    runs: list[Run]

    def test_values(self, key: str) -> list[float]:
        return [float(r.test[key]) for r in self.runs if key in r.test]

    @property
    def tested(self) -> bool:
        return all("test/top1_err" in r.test for r in self.runs)

    def top1(self) -> Optional[SeedSummary]:
        """Test top-1 error over seeds; None if a run has no test stage."""
        return seed_summary(self.test_values("test/top1_err")) if self.tested else None

    def interval(self) -> Optional[tuple[float, float, str]]:
        """The 95% interval of the test top-1 error: over seeds (t) for several runs, binomial over
        test images for one."""
        summary = self.top1()
        if summary is None:
            return None
        if summary.n > 1:
            return summary.low, summary.high, "t"
        images = self.runs[0].test_images
        if not images:
            return None
        return (*binomial_interval(round(summary.mean * images), images), "binomial")


def configurations(runs: list[Run]) -> list[Configuration]:
    grouped: dict[str, list[Run]] = {}
    for r in runs:
        grouped.setdefault(r.group, []).append(r)
    return [
        Configuration(label, sorted(members, key=lambda r: (r.seed is None, r.seed)))
        for label, members in grouped.items()
    ]


COLUMNS = [
    "configuration",
    "head",
    "seeds",
    "test top-1 err %",
    "95% interval",
    "sd",
    "test top-5 err %",
    "published top-1/top-5 %",
    "val top-1 err % (best epoch)",
    "chosen on",
    "params (M)",
    "feature dim",
    "train images/s",
    "epochs",
]
RUN_COLUMNS = [
    "run",
    "seed",
    "test top-1 err %",
    "test top-5 err %",
    "val top-1 err % (best epoch)",
    "val top-5 err % (best epoch)",
    "best epoch",
    "last epoch val top-1 %",
    "chosen on",
    "folder",
]


def _pct(v: Optional[float], digits: int = 2) -> str:
    return "" if v is None or v != v else f"{100 * v:.{digits}f}"


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def table_rows(configs: list[Configuration]) -> list[list[str]]:
    rows = []
    for c in configs:
        first = c.runs[0]
        pub = (
            f"{first.published.top1:.2f} / {first.published.top5:.2f} ({first.published.row})"
            if first.published
            else ""
        )
        top1, interval = c.top1(), c.interval()
        val = [r.best["val/top1_err"] for r in c.runs if "val/top1_err" in r.best]
        epochs = sorted({str(r.best["epoch"]) for r in c.runs if "epoch" in r.best})
        ips = [v for v in (r.metric("train_images_per_s") for r in c.runs) if v is not None]
        rows.append(
            [
                c.label,
                first.summary["head"]["name"],
                str(len(c.runs)),
                _pct(top1.mean if top1 else None),
                "" if interval is None else f"[{_pct(interval[0])}, {_pct(interval[1])}] ({interval[2]})",
                _pct(top1.sd if top1 else None),
                _pct(_mean(c.test_values("test/top5_err")) if c.tested else None),
                pub,
                f"{_pct(_mean(val))} ({', '.join(epochs)})" if val else "",
                ", ".join(sorted({r.selected_on for r in c.runs})),
                f"{first.summary['params'] / 1e6:.2f}",
                str(first.summary["feature_dim"]),
                "" if not ips else f"{_mean(ips):.0f}",
                str(max(r.summary["epochs"] for r in c.runs)),
            ]
        )
    return rows


def run_rows(runs: list[Run], root: Path) -> list[list[str]]:
    rows = []
    for r in runs:
        best = r.best
        rows.append(
            [
                r.label,
                "" if r.seed is None else str(r.seed),
                _pct(r.test.get("test/top1_err")),
                _pct(r.test.get("test/top5_err")),
                _pct(best.get("val/top1_err")),
                _pct(best.get("val/top5_err")),
                str(best.get("epoch", "")),
                _pct(r.metric("val/top1_err")),
                r.selected_on,
                os.path.relpath(r.folder, root),
            ]
        )
    return rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def markdown(rows: list[list[str]], title: str) -> str:
    return f"# {title}\n\n" + markdown_table(COLUMNS, rows)


@dataclass
class Comparison:
    a: str
    b: str
    difference: Difference  # error(A) - error(B) over the test images, seed pairs averaged
    seeds: Optional[SeedSummary]  # the per-seed-pair differences (two pairs or more)
    mcnemar: list[tuple[str, McNemar]]  # per seed pair ("seed 0" or "seed 0 / seed 3")

    @property
    def verdict(self) -> str:
        """Which makes fewer errors, when the images and the seeds both say so: the bootstrap interval
        over images excludes 0 and, with two seed pairs or more, so does the seed-pair t-interval
        (differences between seeds are not in the image bootstrap). With one seed pair only the
        images can speak, and the verdict says so."""
        intervals = [(self.difference.low, self.difference.high)]
        if self.seeds is not None:
            intervals.append((self.seeds.low, self.seeds.high))
        caveat = " (one seed pair: images only)" if self.seeds is None else ""
        if all(low > 0 for low, _ in intervals):
            return f"{self.b} lower{caveat}"
        if all(high < 0 for _, high in intervals):
            return f"{self.a} lower{caveat}"
        return "not resolved"


class NotComparable(UserError, ValueError):
    """Two configurations cannot be compared image by image."""


def compare(a: Configuration, b: Configuration) -> Comparison:
    """A vs B on the same test images: runs paired by seed (by order where seeds differ)."""
    predictions = {}
    for c in (a, b):
        for r in c.runs:
            p = r.predictions()
            if p is None:
                raise NotComparable(f"{r.folder} has no {PREDICTIONS_FILE} (its run predates per-image predictions)")
            predictions[r.folder] = p
    reference = predictions[a.runs[0].folder]
    for folder, p in predictions.items():
        if not (np.array_equal(p.index, reference.index) and np.array_equal(p.label, reference.label)):
            raise NotComparable(f"{folder} was tested on other images than {a.runs[0].folder}")
    common = sorted({r.seed for r in a.runs} & {r.seed for r in b.runs} - {None})
    if common:
        pairs = [(next(r for r in a.runs if r.seed == s), next(r for r in b.runs if r.seed == s)) for s in common]
    else:
        pairs = list(zip(a.runs, b.runs))
    a_err = np.stack([~predictions[ra.folder].correct for ra, _ in pairs]).astype(float)
    b_err = np.stack([~predictions[rb.folder].correct for _, rb in pairs]).astype(float)
    tests = [
        (
            f"seed {ra.seed}" if ra.seed == rb.seed else f"seed {ra.seed} / seed {rb.seed}",
            mcnemar_exact(predictions[ra.folder].correct, predictions[rb.folder].correct),
        )
        for ra, rb in pairs
    ]
    return Comparison(
        a.label,
        b.label,
        paired_bootstrap(a_err, b_err),
        paired_seed_interval(a_err.mean(1).tolist(), b_err.mean(1).tolist()),
        tests,
    )


MAX_ALL_PAIRS = 8  # up to this many configurations: every pair; more: each against the first


def comparisons(configs: list[Configuration], requested: Sequence[tuple[str, str]] = ()) -> list[Comparison]:
    """Paired comparisons of configurations tested on the same images, and the `requested` pairs
    of labels (an unknown label or pair that cannot be compared is an error)."""
    by_label = {c.label: c for c in configs}
    out = []
    for a, b in requested:
        missing = [x for x in (a, b) if x not in by_label]
        if missing:
            raise NotComparable(
                f"--compare: no configuration {missing[0]!r}; the configurations: {', '.join(by_label)}"
            )
        out.append(compare(by_label[a], by_label[b]))
    done = {(c.a, c.b) for c in out} | {(c.b, c.a) for c in out}
    tested = [c for c in configs if all((r.folder / PREDICTIONS_FILE).is_file() for r in c.runs)]
    if len(tested) <= MAX_ALL_PAIRS:
        pairs = [(x, y) for i, x in enumerate(tested) for y in tested[i + 1 :]]
    else:
        pairs = [(tested[0], y) for y in tested[1:]]
    for x, y in pairs:
        if (x.label, y.label) in done:
            continue
        try:
            out.append(compare(x, y))
        except NotComparable:  # another test set (another data set or split): not paired
            continue
    return out


COMPARISON_COLUMNS = [
    "A",
    "B",
    "seed pairs",
    "error A - B (pts)",
    "paired bootstrap 95% (pts)",
    "seed-pair t 95% (pts)",
    "McNemar exact p (A right only / B right only)",
    "verdict",
]


def comparison_rows(found: list[Comparison]) -> list[list[str]]:
    rows = []
    for c in found:
        d, s = c.difference, c.seeds
        rows.append(
            [
                c.a,
                c.b,
                str(len(c.mcnemar)),
                f"{100 * d.estimate:+.2f}",
                f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}]",
                "" if s is None else f"[{100 * s.low:+.2f}, {100 * s.high:+.2f}]",
                "; ".join(f"{who}: {m.p_value:.3g} ({m.only_a_right}/{m.only_b_right})" for who, m in c.mcnemar),
                c.verdict,
            ]
        )
    return rows


def plot_errors(configs: list[Configuration], out: Path) -> None:
    from gmsop.plots import error_bars

    def headline(c: Configuration) -> tuple[Optional[float], Optional[float]]:
        if c.tested:
            return c.top1().mean, _mean(c.test_values("test/top5_err"))
        val = [r.best for r in c.runs]
        return _mean([b["val/top1_err"] for b in val if "val/top1_err" in b]), _mean(
            [b["val/top5_err"] for b in val if "val/top5_err" in b]
        )

    values = [headline(c) for c in configs]
    intervals = [c.interval() for c in configs]
    error_bars(
        [c.label for c in configs],
        [v[0] for v in values],
        [v[1] for v in values],
        [None if c.runs[0].published is None else c.runs[0].published.top1 / 100 for c in configs],
        out,
        top1_intervals=[None if i is None else (i[0], i[1]) for i in intervals],
        ylabel="test error (%)" if all(c.tested for c in configs) else "error (%): test, or best val where untested",
    )


def plot_usage(runs: list[Run], out: Path) -> bool:
    from gmsop.plots import usage_heatmap

    mixed = [r for r in runs if r.usage]
    if not mixed:
        return False
    usage_heatmap([r.label for r in mixed], [r.usage for r in mixed], out)
    return True


USAGE_COLUMNS = [
    "run",
    "epochs",
    "active components, train (first -> last epoch)",
    "fewest active in an epoch, train",
    "usage entropy, train (first -> last)",
    "least-used component, train, last epoch (% of images)",
    "active / entropy, val, last epoch",
]


def usage_rows(runs: list[Run]) -> list[list[str]]:
    """Per gated run: how many components stay in use over training and how evenly (entropy of
    the usage shares over ln N: 1 = even, 0 = one component takes all)."""
    rows = []
    for r in runs:
        train, val = r.usage_history.get("train", {}), r.usage_history.get("val", {})
        if not train:
            continue
        first, last = train[min(train)], train[max(train)]
        active = {e: sum(u > 0 for u in usage) for e, usage in train.items()}
        val_last = val[max(val)] if val else None
        rows.append(
            [
                r.label,
                str(len(train)),
                f"{active[min(train)]} -> {active[max(train)]} of {len(last)}",
                str(min(active.values())),
                f"{usage_entropy(first):.3f} -> {usage_entropy(last):.3f}",
                f"{100 * min(last):.2f}",
                "" if val_last is None else f"{sum(u > 0 for u in val_last)} / {usage_entropy(val_last):.3f}",
            ]
        )
    return rows


def plot_usage_over_epochs(runs: list[Run], out: Path) -> bool:
    from gmsop.plots import usage_over_epochs

    gated = {r.label: r.usage_history for r in runs if r.usage_history.get("train")}
    if not gated:
        return False
    usage_over_epochs(gated, usage_entropy, out)
    return True


def plot_curves(runs: list[Run], out: Path) -> bool:
    from gmsop.plots import learning_curves

    with_curves = {r.label: r.curves for r in runs if r.curves}
    if not with_curves:
        return False
    learning_curves(with_curves, out)
    return True


def report(root: Path, out: Optional[Path] = None, compare_pairs: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the report for the runs under root; return its folder. `compare_pairs`: configurations
    (labels) to compare image by image besides those compared by default."""
    runs, skipped = collect(root)
    for k in skipped:
        print(f"not included: {k.folder}: {k.why}", file=sys.stderr)
    configs = configurations(runs)
    found = comparisons(configs, compare_pairs)
    out = out or root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(configs)
    write_csv_atomic(out / "report.csv", COLUMNS, rows)
    per_run = run_rows(runs, root)
    write_csv_atomic(out / "runs.csv", RUN_COLUMNS, per_run)
    plot_errors(configs, out / "errors.png")
    has_usage = plot_usage(runs, out / "component_usage.png")
    md = markdown(rows, f"Runs under {root}") + (
        "\nTest error: each run's best.ckpt (chosen on the split in 'chosen on') on the test split, once. "
        "Runs that differ only in their seed form one row: mean, 95% Student-t interval of the mean over "
        "seeds and standard deviation; a single run shows the exact binomial 95% interval over its test "
        "images. 'test' in 'chosen on' marks runs selected on the test split itself (the published "
        "protocol, data.select_on_test, or runs made before val was held out): their test error is "
        "optimistic.\n\n![test error per configuration, with 95% intervals](errors.png)\n"
    )
    if found:
        write_csv_atomic(out / "comparisons.csv", COMPARISON_COLUMNS, comparison_rows(found))
        md += (
            "\n## Paired comparisons on the same test images\n\nError A - B in points (negative: A makes fewer "
            "errors). Paired bootstrap: per test image, the error difference averaged over the seed pairs, "
            "resampled over images (percentile interval, 10,000 resamples). Seed-pair t: the interval of the per-pair "
            "differences (two pairs or more). McNemar: exact two-sided test per seed pair, with the images "
            "only A and only B classify correctly. Verdict: which makes fewer errors when the bootstrap "
            "interval excludes 0 and, with two seed pairs or more, the seed-pair interval does too (the "
            "image bootstrap does not see differences between seeds); else not resolved.\n\n"
            + markdown_table(COMPARISON_COLUMNS, comparison_rows(found))
        )
    md += "\n## Runs\n\n" + markdown_table(RUN_COLUMNS, per_run)
    if plot_curves(runs, out / "curves.png"):
        md += "\n![loss and error per epoch](curves.png)\n"
    if has_usage:
        md += "\n![component usage (validation, last epoch)](component_usage.png)\n"
    usage = usage_rows(runs)
    if usage:
        write_csv_atomic(out / "usage.csv", USAGE_COLUMNS, usage)
        plot_usage_over_epochs(runs, out / "usage_over_epochs.png")
        md += (
            "\n## Component usage over training\n\nActive: components selected by at least one image in the "
            "epoch. Usage entropy: entropy of the components' shares of all selections divided by ln N "
            "(1 = all used equally, 0 = one takes all).\n\n"
            + markdown_table(USAGE_COLUMNS, usage)
            + "\n![component usage per epoch](usage_over_epochs.png)\n"
        )
    if skipped:
        md += "\n## Not included\n\n" + "".join(f"- `{os.path.relpath(k.folder, root)}`: {k.why}\n" for k in skipped)
    write_text_atomic(out / "report.md", md)
    return out
