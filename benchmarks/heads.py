"""Forward+backward time of every pooling head, and iSQRT / MPN-COV measured in the same run.

    python benchmarks/heads.py [--batch 64] [--repeats 7] [--device cpu|cuda] [--out FILE]

Shapes: B x 256 x 14 x 14 and B x 256 x 8 x 8 (and 128 x 16 x 16, the paper's GM-SOP input).
Prints a table and writes JSON (default benchmarks/results/heads.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import environment, median_seconds  # noqa: E402

from gmsop.heads import build_head  # noqa: E402

SHAPES = [(256, 14, 14), (256, 8, 8), (128, 16, 16)]
HEADS = [{"name": "gap"}, {"name": "sop"}, {"name": "isqrt", "iterations": 3}, {"name": "mpncov"}]


def head_fwd_bwd_seconds(cfg: dict, batch: int, c: int, h: int, w: int, device: torch.device, repeats: int) -> float:
    head = build_head(cfg, c).to(device)
    x = torch.randn(batch, c, h, w, device=device, requires_grad=True)

    def step() -> None:
        out = head(x).features
        out.sum().backward()
        x.grad = None

    return median_seconds(step, device, repeats=repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "heads.json")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"forward+backward, B={args.batch}, median of {args.repeats}, {environment(device)}")
    print(f"{'head':<10}{'C x H x W':>14}{'ms':>10}{'x GAP':>9}")
    for c, h, w in SHAPES:
        times = {}
        for cfg in HEADS:
            ms = 1e3 * head_fwd_bwd_seconds(cfg, args.batch, c, h, w, device, args.repeats)
            times[cfg["name"]] = ms
            rows.append({"head": cfg["name"], "shape": [c, h, w], "ms": ms})
        for name, ms in times.items():
            print(f"{name:<10}{f'{c}x{h}x{w}':>14}{ms:>10.1f}{ms / times['gap']:>9.1f}")
        ratio = times["isqrt"] / times["mpncov"]
        rows.append({"ratio": "isqrt/mpncov", "shape": [c, h, w], "value": ratio})
        print(f"  ratio isqrt(3 it) / mpncov (eigendecomposition) at {c}x{h}x{w}: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": environment(device), "batch": args.batch, "rows": rows}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
