"""The paper's models built from experiments/paper/*.yaml: parameter counts and map sizes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gmsop.models.classifier import SecondOrderClassifier
from tests.test_config import compose_train

# (experiment, published params in millions, feature dim)
MATCHING_ROWS = [
    ("imagenet64_resnet18_srsop", 9.0, 8256),
    ("imagenet64_resnet18_gmgap_16_8", 2.3, 512),
    ("imagenet64_resnet18_gmsop_16_8", 10.3, 8256),
    ("imagenet64_wrn36_2_gmgap_16_8", 8.7, 512),
]
# Rows whose published counts the authors' own release does not reproduce (kept exact, so a
# change shows). Read from ZilinGao/GM-SOP: cnn_init_resnet_baseline.m builds the same
# ResNet-18 (widths 2^(s+2), 1x1 conv+BN adapters on stages 3-5, GAP, 128 -> 1000 classifier),
# 0.83M parameters against the published 0.9M; cnn_init_WRN_GM.m builds the same WRN-36-2
# GM-SOP (gating and components 512 -> 128, 8256 -> 1000 classifier), 17.8M against 15.7M.
MISMATCHED_ROWS = [("imagenet64_resnet18_gap", 829_432, 128), ("imagenet64_wrn36_2_gmsop_16_8", 17_809_144, 8256)]


def _model(experiment: str) -> SecondOrderClassifier:
    cfg = OmegaConf.to_container(compose_train(f"experiment=paper/{experiment}"), resolve=True)
    return SecondOrderClassifier(cfg["model"], cfg["head"], cfg["optim"], num_classes=1000, in_chans=3)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("experiment,published_m,dim", MATCHING_ROWS)
def test_parameter_counts_within_2_percent_of_the_paper(experiment, published_m, dim):
    model = _model(experiment)
    assert model.head.out_dim == dim
    assert abs(_params(model) / (published_m * 1e6) - 1) < 0.02, f"{experiment}: {_params(model) / 1e6:.3f}M"


@pytest.mark.parametrize("experiment,count,dim", MISMATCHED_ROWS)
def test_rows_the_spec_does_not_reproduce_are_pinned(experiment, count, dim):
    model = _model(experiment)
    assert (_params(model), model.head.out_dim) == (count, dim)


@pytest.mark.parametrize(
    "experiment,hw",
    [("imagenet64_resnet18_gap", 8), ("imagenet64_resnet18_gmsop_16_8", 16), ("imagenet64_wrn36_2_gmsop_16_8", 16)],
)
def test_feature_map_sizes_at_64x64(experiment, hw):
    model = _model(experiment)
    fmap = model.backbone(torch.randn(1, 3, 64, 64))
    assert fmap.shape[-2:] == (hw, hw) and fmap.shape[1] == model.backbone.num_features
