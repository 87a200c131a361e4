"""The paper's 64x64 backbones are timm models; any timm CNN feeds a head as an NCHW map."""

from __future__ import annotations

import pytest
import timm
import torch

from gmsop.models import create_backbone
from gmsop.registry import ConfigError


@pytest.mark.parametrize("name,channels", [("resnet18_64", 128), ("wrn36_2_64", 256)])
def test_paper_backbones_map_sizes(name, channels):
    x = torch.randn(1, 3, 64, 64)
    second = create_backbone({"backbone": name}, 3, second_order=True)
    first = create_backbone({"backbone": name}, 3, second_order=False)
    assert second(x).shape == (1, channels, 16, 16)  # no last downsampling for second-order heads
    assert first(x).shape == (1, channels, 8, 8)
    assert second.num_features == channels


def test_paper_backbone_through_timm_create_model():
    m = timm.create_model("resnet18_64", num_classes=10)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    m.reset_classifier(0, "")
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 128, 8, 8)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet18_64", pretrained=True)


def test_any_timm_cnn_with_output_stride():
    bb = create_backbone({"backbone": "resnet18", "output_stride": 16}, 3, second_order=True)
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)
    bb = create_backbone({"backbone": "resnet18"}, 1, second_order=True)
    assert bb(torch.randn(1, 1, 64, 64)).shape == (1, 512, 2, 2)


def test_token_backbone_becomes_a_map():
    bb = create_backbone(
        {"backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"img_size": 32, "depth": 1}}, 3, second_order=True
    )
    assert bb(torch.randn(1, 3, 32, 32)).shape == (1, 192, 2, 2)


def test_backbone_errors():
    with pytest.raises(ConfigError, match="unknown backbone model.backbone='resnet_nope'"):
        create_backbone({"backbone": "resnet_nope"}, 3, True)
    with pytest.raises(ConfigError, match="pretrained_file"):
        create_backbone({"backbone": "resnet18", "pretrained": True}, 3, True)
    with pytest.raises(ConfigError, match="last_stride applies to"):
        create_backbone({"backbone": "resnet18", "last_stride": 1}, 3, True)
