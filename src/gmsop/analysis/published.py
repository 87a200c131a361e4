"""The paper's published results (top-1 / top-5 error, %): the one place these numbers live."""

from __future__ import annotations

from typing import NamedTuple, Optional


class Published(NamedTuple):
    table: str
    row: str
    top1: float
    top5: float
    params_m: Optional[float] = None


# Keyed by the experiment name of experiments/paper/*.yaml.
PUBLISHED: dict[str, Published] = {
    "imagenet64_resnet18_gap": Published("ImageNet-64", "ResNet-18 (GAP)", 52.17, 27.09, 0.9),
    "imagenet64_resnet18_srsop": Published("ImageNet-64", "ResNet-18-SR-SOP", 40.56, 19.08, 9.0),
    "imagenet64_resnet18_gmgap_16_8": Published("ImageNet-64", "GM-GAP-16-8 + ResNet-18", 42.25, 19.46, 2.3),
    "imagenet64_wrn36_2_gmgap_16_8": Published("ImageNet-64", "GM-GAP-16-8 + WRN-36-2", 35.98, 14.62, 8.7),
    "imagenet64_resnet18_gmsop_16_8": Published("ImageNet-64", "GM-SOP-16-8 + ResNet-18", 38.48, 17.38, 10.3),
    "imagenet64_wrn36_2_gmsop_16_8": Published("ImageNet-64", "GM-SOP-16-8 + WRN-36-2", 32.71, 12.44, 15.7),
    "places365_resnet18_gap": Published("Places365-100", "GAP (512-d)", 49.96, 19.19),
    "places365_resnet18_gmgap_16_8": Published("Places365-100", "GM-GAP-16-8", 48.07, 17.84),
    "places365_resnet18_sop": Published("Places365-100", "SOP (8256-d)", 49.99, 19.32),
    "places365_resnet18_srsop": Published("Places365-100", "SR-SOP", 48.11, 18.01),
    "places365_resnet18_parametric_srsop": Published("Places365-100", "parametric SR-SOP", 47.48, 17.52),
    "places365_resnet18_gmsop_16_8": Published("Places365-100", "GM-SOP-16-8", 47.18, 17.02),
}


class PaperData(NamedTuple):
    """A data set of the paper's tables: what a model needs to be built, its size, and the data
    module its experiments read it with."""

    classes: int
    train_images: int
    data_module: str
    channels: int = 3


# Keyed by Published.table. ImageNet-1K and Places365-Standard training-set sizes.
PAPER_DATA: dict[str, PaperData] = {
    "ImageNet-64": PaperData(1000, 1_281_167, "imagenet64"),
    "Places365-100": PaperData(365, 1_803_460, "imagefolder"),
}

# A run on downsampled ImageNet with the paper's ResNet-18 matches a row by its head.
_IMAGENET_SIGNATURES = {
    ("resnet18_64", "gap", None, None): "imagenet64_resnet18_gap",
    ("resnet18_64", "isqrt", None, None): "imagenet64_resnet18_srsop",
    ("resnet18_64", "gmgap", 16, 8): "imagenet64_resnet18_gmgap_16_8",
    ("resnet18_64", "gmsop", 16, 8): "imagenet64_resnet18_gmsop_16_8",
    ("wrn36_2_64", "gmgap", 16, 8): "imagenet64_wrn36_2_gmgap_16_8",
    ("wrn36_2_64", "gmsop", 16, 8): "imagenet64_wrn36_2_gmsop_16_8",
}


def match(name: str, data: str, backbone: str, head: dict) -> Optional[Published]:
    """The published row a run reproduces: by experiment name (if it ran on that row's data
    set, not e.g. a paper config tried on digits), else (ImageNet-64) by model."""
    if name in PUBLISHED:
        row = PUBLISHED[name]
        return row if PAPER_DATA[row.table].data_module == data else None
    if data != "imagenet64":
        return None
    key = (backbone, head.get("name"), head.get("num_components"), head.get("k"))
    return PUBLISHED.get(_IMAGENET_SIGNATURES.get(key, ""))
