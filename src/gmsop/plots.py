"""Figures written next to runs (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gmsop.paths import replace_atomically  # noqa: E402


def component_usage_figure(usage: Sequence[float], mean_gate: Sequence[float], k: int, title: str, out: Path) -> None:
    """Bar charts of per-component usage (fraction of images) and mean gate weight; atomic write."""
    n = len(usage)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(6, 0.45 * n + 3), 3.2))
    ax1.bar(range(n), usage, color="tab:blue")
    ax1.axhline(k / n, color="k", ls="--", lw=1, label=f"uniform (K/N={k / n:.2f})")
    ax1.set(xlabel="component", ylabel="fraction of images selecting it", ylim=(0, 1.05))
    ax1.legend(loc="upper right", fontsize=8)
    ax2.bar(range(n), mean_gate, color="tab:orange")
    ax2.axhline(1 / k, color="k", ls="--", lw=1, label=f"1/K={1 / k:.2f}")
    ax2.set(xlabel="component", ylabel="mean gate weight when selected")
    ax2.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def _save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        replace_atomically(
            out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
        )
    finally:
        plt.close(fig)


def error_bars(
    labels: Sequence[str],
    top1: Sequence,
    top5: Sequence,
    published_top1: Sequence,
    out: Path,
    top1_intervals: Optional[Sequence] = None,
    ylabel: str = "validation error (%)",
) -> None:
    """Grouped bars of top-1 and top-5 error per configuration, top-1 with its 95% interval
    ((low, high) or None each); published top-1 as markers."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * n + 2), 3.6))
    xs = range(n)
    ax.bar([x - 0.2 for x in xs], [100 * (v or 0) for v in top1], 0.4, label="top-1 error")
    ax.bar([x + 0.2 for x in xs], [100 * (v or 0) for v in top5], 0.4, label="top-5 error")
    bars = [(x, v, i) for x, v, i in zip(xs, top1, top1_intervals or [None] * n) if v is not None and i is not None]
    if bars:
        ax.errorbar(
            [x - 0.2 for x, _, _ in bars],
            [100 * v for _, v, _ in bars],
            yerr=[[100 * (v - i[0]) for _, v, i in bars], [100 * (i[1] - v) for _, v, i in bars]],
            fmt="none",
            ecolor="k",
            capsize=4,
            label="95% interval",
        )
    pub = [(x, 100 * v) for x, v in zip(xs, published_top1) if v is not None]
    if pub:
        ax.scatter(
            [x - 0.2 for x, _ in pub], [v for _, v in pub], marker="_", s=400, color="tab:red", label="published top-1"
        )
    for x, v in zip(xs, top1):
        if v is not None:
            ax.text(x - 0.2, 100 * v, f"{100 * v:.1f}", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel)
    ax.legend(fontsize=8)
    _save(fig, out)


def usage_heatmap(labels: Sequence[str], usage: Sequence[Sequence[float]], out: Path) -> None:
    """Rows: runs; columns: components; colour: fraction of validation images selecting it."""
    width = max(len(u) for u in usage)
    grid = [list(u) + [float("nan")] * (width - len(u)) for u in usage]
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * width + 2.5), 0.5 * len(labels) + 1.5))
    im = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="component", title="component usage (validation, last epoch)")
    fig.colorbar(im, ax=ax, label="fraction of images")
    _save(fig, out)


def usage_over_epochs(
    runs: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]],
    usage_entropy: Callable[[Sequence[float]], float],
    out: Path,
) -> None:
    """Gated heads over training: active components and usage entropy per epoch (train solid,
    validation dashed; one colour per run), then each run's training usage per component and epoch."""
    n_runs = len(runs)
    cols = min(n_runs, 4)
    heat_rows = math.ceil(n_runs / cols)
    fig = plt.figure(figsize=(max(10, 3.2 * cols), 3.8 + 3.0 * heat_rows), layout="constrained")
    grid = fig.add_gridspec(1 + heat_rows, 2 * cols, height_ratios=[1.3] + [1] * heat_rows)
    ax_active, ax_entropy = fig.add_subplot(grid[0, :cols]), fig.add_subplot(grid[0, cols:])
    for i, (label, history) in enumerate(runs.items()):
        for split, ls in (("train", "-"), ("val", "--")):
            per_epoch = history.get(split, {})
            epochs = sorted(per_epoch)
            style = {"color": f"C{i}", "ls": ls, "marker": "."}
            ax_active.plot(epochs, [sum(u > 0 for u in per_epoch[e]) for e in epochs], **style)
            ax_entropy.plot(
                epochs,
                [usage_entropy(per_epoch[e]) for e in epochs],
                label=label if split == "train" else None,
                **style,
            )
        train = history["train"]
        epochs = sorted(train)
        ax = fig.add_subplot(grid[1 + i // cols, 2 * (i % cols) : 2 * (i % cols) + 2])
        columns = [list(train[e]) for e in epochs]
        width = max(len(c) for c in columns)
        matrix = [[c[j] if j < len(c) else math.nan for c in columns] for j in range(width)]
        im = ax.imshow(matrix, aspect="auto", vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax.set(xlabel="epoch", ylabel="component" if i % cols == 0 else None, title=label)
        ax.title.set_fontsize(8)
    fig.colorbar(im, ax=fig.axes[2:], label="fraction of training images selecting it", shrink=0.8)
    most = max(len(u) for h in runs.values() for per_epoch in h.values() for u in per_epoch.values())
    ax_active.set(xlabel="epoch", ylabel="active components", ylim=(0, most + 0.5))
    ax_active.set_title("components in use (solid: train, dashed: val)")
    ax_active.yaxis.get_major_locator().set_params(integer=True)
    ax_entropy.set(xlabel="epoch", ylabel="usage entropy / ln N", ylim=(0, 1.05), title="how evenly they are used")
    for ax in (ax_active, ax_entropy):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.title.set_fontsize(9)
    ax_entropy.legend(fontsize=7, loc="lower left")
    _save(fig, out)


def learning_curves(runs: Mapping[str, Mapping[int, Mapping[str, float]]], out: Path) -> None:
    """Loss and top-1 error per epoch (train dashed, validation solid), one colour per run.

    With one run, validation top-5 error is drawn too and learning-rate steps are marked.
    """
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.6))
    single = len(runs) == 1
    for i, (label, curves) in enumerate(runs.items()):
        epochs = sorted(curves)

        def series(key: str, scale: float = 1.0, curves=curves, epochs=epochs) -> list[float]:
            return [scale * curves[e].get(key, math.nan) for e in epochs]

        train = {"marker": ".", "ls": "--", "color": "C0" if single else f"C{i}"}
        val = {"marker": ".", "ls": "-", "color": "C1" if single else f"C{i}"}
        ax_loss.plot(epochs, series("train/loss"), label="train" if single else None, **train)
        ax_loss.plot(epochs, series("val/loss"), label="val" if single else label, **val)
        ax_err.plot(epochs, series("train/top1_err", 100), label="train top-1" if single else None, **train)
        ax_err.plot(epochs, series("val/top1_err", 100), label="val top-1" if single else label, **val)
        if single:
            ax_err.plot(epochs, series("val/top5_err", 100), label="val top-5", **{**val, "ls": ":"})
            _mark_lr_steps(epochs, series("lr"), (ax_loss, ax_err))
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy + head's aux loss)")
    ax_err.set(xlabel="epoch", ylabel="error (%)")
    for ax in (ax_loss, ax_err):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.suptitle(next(iter(runs)) if single else "dashed: train, solid: validation", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def _mark_lr_steps(epochs: Sequence[int], lrs: Sequence[float], axes) -> None:
    """A dotted line, labelled with the new rate, where the learning rate changes between epochs."""
    for e, before, after in zip(epochs[1:], lrs, lrs[1:]):
        if before != after and not math.isnan(before) and not math.isnan(after):
            for ax in axes:
                ax.axvline(e - 0.5, color="grey", lw=0.8, ls=":")
            axes[-1].annotate(
                f"lr {after:g}",
                (e - 0.5, 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                color="grey",
            )


def study_figures(study, metric: str, history_out: Path, params_out: Path) -> None:
    """Optuna's own plots of a study: the metric per trial (with the best so far) and the
    metric against each searched parameter. Skipped until a trial has completed."""
    import warnings

    import optuna
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as optuna_plots

    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # matplotlib: singular limits while one value was tried
        _save(optuna_plots.plot_optimization_history(study, target_name=metric).figure, history_out)
        if not study.best_trial.params:
            return
        axes = optuna_plots.plot_slice(study, target_name=metric)
        axes = list(axes.flat) if hasattr(axes, "flat") else [axes]
        for ax in axes:
            ax.xaxis.set_minor_formatter(NullFormatter())  # log axes: label decades only, not every minor tick
        axes[0].figure.set_size_inches(max(6.0, 3.2 * len(axes) + 1), 4.2)
        _save(axes[0].figure, params_out)
