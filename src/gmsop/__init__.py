"""GM-SOP: second-order pooling heads (GAP, SOP, iSQRT-COV, MPN-COV, GM-SOP) for timm backbones."""

__version__ = "0.1.0"
