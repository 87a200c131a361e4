"""A run's backbone weights as a safetensors file that `model.pretrained_file` loads."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

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
