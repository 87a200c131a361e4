"""Collect finished runs into a table and plots: `python -m gmsop.report FOLDER [--out DIR]`.

Reads every run folder under FOLDER (summary.json, .hydra/overrides.yaml, and the CSV log
csv/metrics.csv for learning curves and component usage); no W&B server is needed. Writes
report.md, report.csv, errors.png, curves.png (loss and error per epoch) and, for gated
mixtures, component_usage.png, to DIR (default FOLDER/report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from gmsop.analysis.published import Published, match
from gmsop.errors import UserError, exit_on_user_error
from gmsop.models.usage import usage_entropy, usage_key
from gmsop.paths import write_csv_atomic, write_text_atomic
from gmsop.run.csv_log import read_log
from gmsop.run.curves import Curves, best_epoch, curves_from_log
from gmsop.run.folder import checkpoint_files, is_locked, run_folder_of
from gmsop.run.resume import continuation_of

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
    for path in sorted(p for p in root.rglob("summary.json") if "report" not in p.relative_to(root).parts):
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
        if folder not in summaries and not (folder / "summary.json").is_file() and checkpoint_files(folder):
            state = "running now" if is_locked(folder) else "killed before it could write summary.json"
            skipped.append(Skipped(folder, f"no summary.json ({state}); resume with trainer.resume={folder}"))
    if not summaries:
        why = "".join(f"\n  {k.folder}: {k.why}" for k in skipped)
        raise NoFinishedRuns(f"no finished runs (summary.json) under {root}{why}")
    folders = list(summaries)
    overrides = {f: _overrides(f) for f in folders}
    common = set.intersection(*(set(o) for o in overrides.values())) if len(folders) > 1 else set()
    labels = {}
    for f, s in summaries.items():
        varying = [o for o in overrides[f] if o not in common and not o.startswith("experiment=")]
        labels[f] = (" ".join(varying) or s["head"]["name"]) if len(folders) > 1 else s["name"]
    labels = _unique(labels, summaries, root)
    runs = []
    for f, s in summaries.items():
        log = read_log(f)  # read once: usage and curves both come from it
        published = match(s["name"], s["data"], s["backbone"], s["head"])
        runs.append(Run(f, labels[f], s, published, _usage_history(log), curves_from_log(log)))
    return runs, skipped


def _unique(labels: dict[Path, str], summaries: dict[Path, dict], root: Path) -> dict[Path, str]:
    """Runs that would share a label (the same overrides in two experiments, or repeated runs)
    are told apart by their experiment name, then by their folder; no run is ever merged away."""

    def groups(current: dict[Path, str]) -> list[list[Path]]:
        by_label: dict[str, list[Path]] = {}
        for f, label in current.items():
            by_label.setdefault(label, []).append(f)
        return [g for g in by_label.values() if len(g) > 1]

    out = dict(labels)
    for group in groups(out):
        if len({summaries[f]["name"] for f in group}) > 1:
            for f in group:
                out[f] = f"{out[f]} ({summaries[f]['name']})"
    for group in groups(out):
        for f in group:
            out[f] = f"{out[f]} [{os.path.relpath(f, root)}]"
    return out


COLUMNS = [
    "run",
    "head",
    "top-1 err %",
    "top-5 err %",
    "best epoch",
    "last epoch top-1 %",
    "published top-1/top-5 %",
    "params (M)",
    "feature dim",
    "train images/s",
    "epochs",
    "folder",
]


def table_rows(runs: list[Run], root: Path) -> list[list[str]]:
    def pct(v: Optional[float]) -> str:
        return "" if v is None else f"{100 * v:.2f}"

    rows = []
    for r in runs:
        pub = f"{r.published.top1:.2f} / {r.published.top5:.2f} ({r.published.row})" if r.published else ""
        ips = r.metric("train_images_per_s")
        best = r.best
        rows.append(
            [
                r.label,
                r.summary["head"]["name"],
                pct(best.get("val/top1_err")),
                pct(best.get("val/top5_err")),
                str(best.get("epoch", "")),
                pct(r.metric("val/top1_err")),
                pub,
                f"{r.summary['params'] / 1e6:.2f}",
                str(r.summary["feature_dim"]),
                "" if ips is None else f"{ips:.0f}",
                str(r.summary["epochs"]),
                os.path.relpath(r.folder, root),
            ]
        )
    return rows


def markdown(rows: list[list[str]], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_errors(runs: list[Run], out: Path) -> None:
    from gmsop.plots import error_bars

    error_bars(
        [r.label for r in runs],
        [r.best.get("val/top1_err") for r in runs],
        [r.best.get("val/top5_err") for r in runs],
        [None if r.published is None else r.published.top1 / 100 for r in runs],
        out,
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


def report(root: Path, out: Optional[Path] = None) -> Path:
    """Write the report for the runs under root; return its folder."""
    runs, skipped = collect(root)
    for k in skipped:
        print(f"not included: {k.folder}: {k.why}", file=sys.stderr)
    out = out or root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(runs, root)
    write_csv_atomic(out / "report.csv", COLUMNS, rows)
    plot_errors(runs, out / "errors.png")
    has_usage = plot_usage(runs, out / "component_usage.png")
    md = (
        markdown(rows, f"Runs under {root}") + "\nTop-1 and top-5 error are the best epoch's (lowest validation top-1 "
        "error); the last epoch's top-1 is beside them.\n\n![validation error per run](errors.png)\n"
    )
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
            + "| "
            + " | ".join(USAGE_COLUMNS)
            + " |\n|"
            + "---|" * len(USAGE_COLUMNS)
            + "\n"
            + "".join("| " + " | ".join(row) + " |\n" for row in usage)
            + "\n![component usage per epoch](usage_over_epochs.png)\n"
        )
    if skipped:
        md += "\n## Not included\n\n" + "".join(f"- `{os.path.relpath(k.folder, root)}`: {k.why}\n" for k in skipped)
    write_text_atomic(out / "report.md", md)
    return out


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="an ablation/multirun folder or a single run folder")
    p.add_argument("--out", type=Path, default=None, help="where to write (default FOLDER/report)")
    args = p.parse_args()
    if not args.folder.is_dir():
        p.error(f"{args.folder} is not a folder")
    out = report(args.folder, args.out)
    print((out / "report.md").read_text())
    print(f"written to {out}")


if __name__ == "__main__":
    main()
