"""The paper's backbones for 64x64 inputs, registered as timm models.

`timm.create_model('resnet18_64', num_classes=0, global_pool='')` builds the release's
ResNet-18 (3x3 stride-1 stem, 16 channels, no max pool; stages of widths 16/32/64/128);
`wrn36_2_64` the WRN-36-2 (widths 32/64/128/256, 4 blocks per stage, 1x1 conv+BN
shortcut on every stage's first block). `last_stride` is the stride of the last stage:
2 for first-order heads (8x8 maps at 64x64 input), 1 for second-order heads (16x16).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models import register_model
from torch import nn


class BasicBlock(nn.Module):
    """Post-activation residual block: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, conv_shortcut: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)
        needs_projection = conv_shortcut or stride != 1 or in_ch != out_ch
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            if needs_projection
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class SmallImageResNet(nn.Module):
    """ResNet for small (e.g. 64x64) images with timm's model interface.

    Exposes `forward_features` (the last map), `forward_head`, `num_features`,
    `reset_classifier` and `get_classifier`, so the toolkit treats it like any timm model.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        stem_width: int = 16,
        conv_shortcut_first: bool = False,
        last_stride: int = 2,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        **_timm_kwargs,
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)
        )
        strides = [1, 2, 2, last_stride]
        stages, ch, reduction = [], stem_width, 1
        # timm's description of the stages (as its own models carry it): name, channels, stride so far
        self.feature_info = [{"module": "stem", "num_chs": stem_width, "reduction": 1}]
        for i, (width, n_blocks, stride) in enumerate(zip(widths, blocks, strides)):
            layers = [BasicBlock(ch, width, stride, conv_shortcut_first)]
            layers += [BasicBlock(width, width, 1, False) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            ch, reduction = width, reduction * stride
            self.feature_info.append({"module": f"stages.{i}", "num_chs": width, "reduction": reduction})
        self.stages = nn.Sequential(*stages)
        self.num_features = ch
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        if global_pool not in ("", "avg"):
            raise ValueError(f"global_pool must be '' or 'avg', got {global_pool!r}")
        self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _no_pretrained(pretrained: bool, name: str) -> None:
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights (and nothing is downloaded); use pretrained=False")


@register_model
def resnet18_64(pretrained: bool = False, **kwargs) -> SmallImageResNet:
    """The GM-SOP release's ResNet-18 for 64x64 images (0.9M parameters with a GAP head)."""
    _no_pretrained(pretrained, "resnet18_64")
    return SmallImageResNet(widths=(16, 32, 64, 128), blocks=(2, 2, 2, 2), **kwargs)


@register_model
def wrn36_2_64(pretrained: bool = False, **kwargs) -> SmallImageResNet:
    """The release's WRN-36-2 for 64x64 images: widths 32/64/128/256, 4 blocks per stage."""
    _no_pretrained(pretrained, "wrn36_2_64")
    return SmallImageResNet(widths=(32, 64, 128, 256), blocks=(4, 4, 4, 4), conv_shortcut_first=True, **kwargs)
