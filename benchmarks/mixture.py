"""GM-SOP-16-8 forward+backward: sparse dispatch / all 16 components on every image, same run.

    python benchmarks/mixture.py [--batch 64] [--repeats 5] [--device cpu|cuda]

Shape: B x 128 x 16 x 16 (the paper's ResNet-18 map at 64x64), component and gating dims
256 -> 128 (8256-d). The ideal ratio is K/N = 0.5 plus the gate's share.
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


def mixture_seconds(dispatch: str, batch: int, device: torch.device, repeats: int, n: int = 16, k: int = 8) -> float:
    torch.manual_seed(0)
    head = build_head({"name": "gmsop", "num_components": n, "k": k, "dispatch": dispatch}, 128).to(device).train()
    x = torch.randn(batch, 128, 16, 16, device=device, requires_grad=True)

    def step() -> None:
        out = head(x)
        (out.features.sum() + out.aux_loss).backward()
        x.grad = None
        head.zero_grad(set_to_none=True)

    return median_seconds(step, device, repeats=repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mixture.json")
    args = p.parse_args()
    device = torch.device(args.device)
    sparse = mixture_seconds("sparse", args.batch, device, args.repeats)
    dense = mixture_seconds("dense", args.batch, device, args.repeats)
    ratio = sparse / dense
    print(f"GM-SOP-16-8, B={args.batch}, 128x16x16, dims 256->128, {environment(device)}")
    print(f"sparse {1e3 * sparse:.0f} ms, dense {1e3 * dense:.0f} ms, ratio {ratio:.3f} (ideal 0.50)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": environment(device), "batch": args.batch, "sparse_ms": 1e3 * sparse,
                                    "dense_ms": 1e3 * dense, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
