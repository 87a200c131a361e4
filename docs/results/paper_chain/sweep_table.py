"""The rate sweep's best-epoch val error per head and base rate, and the rate chosen (Markdown).

    python docs/results/paper_chain/sweep_table.py [docs/results/paper_chain/sweep]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"gap": "GAP", "srsop": "SR-SOP", "parametric_srsop": "parametric SR-SOP", "gmsop": "GM-SOP-16-8"}


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/paper_chain/sweep")
    rates = sorted({float(p.name[2:]) for p in root.glob("*/lr*")})
    print("| head (val top-1 error %) | " + " | ".join(f"{r:g}" for r in rates) + " | chosen |")
    print("|---|" + "---|" * (len(rates) + 1))
    for head in sorted(p.name for p in root.iterdir() if p.is_dir()):
        cells = []
        for r in rates:
            f = root / head / f"lr{r:g}" / "summary.json"
            cells.append(f"{100 * json.loads(f.read_text())['best']['val/top1_err']:.1f}" if f.exists() else "")
        chosen = (root / head / "chosen_lr.txt").read_text().strip()
        print(f"| {NAMES.get(head, head)} | " + " | ".join(cells) + f" | {chosen} |")


if __name__ == "__main__":
    main()
