"""Backbones (timm, incl. the paper's 64x64 ones) and the Lightning classifier."""

from gmsop.models.factory import create_backbone

__all__ = ["create_backbone"]
