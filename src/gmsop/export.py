"""Entry point: `python -m gmsop.export CKPT OUT.safetensors` writes a run's backbone weights.

The file holds the timm backbone's state dict (no head, no classifier), the format
`model.pretrained=true model.pretrained_file=OUT.safetensors` loads into the same backbone:
pretrain on one data set, fine-tune with any head on another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from gmsop.errors import exit_on_user_error
from gmsop.paths import replace_atomically
from gmsop.run_folder import read_checkpoint

PREFIX = "backbone.model."


def export_backbone(ckpt_path: Path, out: Path) -> dict:
    """Write the checkpoint's backbone weights to `out` (safetensors, written atomically); returns
    what was written: backbone name, tensor count and parameters."""
    ckpt = read_checkpoint(Path(ckpt_path))
    weights = {k[len(PREFIX) :]: v.contiguous() for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    backbone = ckpt["hyper_parameters"]["model"]["backbone"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(out, lambda tmp: save_file(weights, str(tmp), metadata={"backbone": backbone}))
    return {"backbone": backbone, "tensors": len(weights), "values": sum(v.numel() for v in weights.values())}


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a gmsop checkpoint (e.g. RUN/checkpoints/best.ckpt)")
    p.add_argument("out", type=Path, help="the weights file to write (.safetensors)")
    args = p.parse_args()
    info = export_backbone(args.checkpoint, args.out)
    print(f"wrote {args.out}: {info['backbone']} backbone, {info['tensors']} tensors, {info['values']:,} values")
    use = f"model.backbone={info['backbone']} model.pretrained=true model.pretrained_file={args.out}"
    print(f"fine-tune from it: {use}")


if __name__ == "__main__":
    main()
