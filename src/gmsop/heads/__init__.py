"""Pooling heads behind one interface (`PoolingHead`) and one registry (`HEADS`)."""

from gmsop.heads import bilinear, first_order, mixture, second_order  # noqa: F401  (register entries)
from gmsop.heads.base import HEADS, HeadOutput, PoolingHead, Routing, build_head

__all__ = ["HEADS", "HeadOutput", "PoolingHead", "Routing", "build_head"]
