"""GM-SOP: second-order pooling heads (GAP, SOP, iSQRT-COV, MPN-COV, B-CNN, CBP, GM-SOP) for timm backbones.

`create_head` puts any head into your own PyTorch model, no config files needed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create_head(name: str, in_channels: int, **options: Any):
    """A pooling head as a plain `nn.Module`: B x `in_channels` x H x W -> `HeadOutput`
    (`.features`: B x `head.out_dim`; `.aux_loss`: add it to your loss, zero for most heads).

    `name` is any registered head (gap, sop, isqrt, mpncov, parametric_isqrt, bcnn, cbp, gmsop,
    gmgap, mixture); `options` are its constructor's keyword arguments, checked like a config
    (an unknown option or a wrong type fails naming it). Example:
    `create_head("isqrt", 512, reduce_dim=128)`.
    """
    from gmsop.heads import build_head

    return build_head({"name": name, **options}, in_channels)


__all__ = ["create_head", "__version__"]
