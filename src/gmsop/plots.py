"""Figures written next to runs (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
