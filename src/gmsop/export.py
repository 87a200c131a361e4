"""Entry point: `python -m gmsop.export CKPT OUT.safetensors` writes a run's backbone weights.

The file holds the timm backbone's state dict (no head, no classifier), the format
`model.pretrained=true model.pretrained_file=OUT.safetensors` loads into the same backbone:
pretrain on one data set, fine-tune with any head on another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gmsop.analysis.export import export_backbone
from gmsop.errors import exit_on_user_error
from gmsop.stop_signals import stop_signals_end


@exit_on_user_error
@stop_signals_end("the export")
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a gmsop checkpoint (e.g. RUN/checkpoints/best.ckpt)")
    p.add_argument("out", type=Path, help="the weights file to write (.safetensors)")
    args = p.parse_args()
    info = export_backbone(args.checkpoint, args.out)
    print(f"wrote {args.out}: {info['backbone']} backbone, {info['tensors']} tensors, {info['values']:,} values")
    use = f"model.backbone={info['backbone']} model.pretrained=true model.pretrained_file={args.out}"
    print(f"fine-tune from it: {use}")


def cli() -> None:
    """`python -m gmsop.export` and the `gmsop-export` command."""
    main()


if __name__ == "__main__":
    cli()
