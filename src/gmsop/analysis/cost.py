"""Parameters and training FLOPs of an experiment's model, without its data or a GPU.

    python -m gmsop.cost experiment=paper/imagenet64_resnet18_gmsop_16_8 [key=value ...]
    python -m gmsop.cost --paper        # every experiments/paper/ row, as a Markdown table

Parameters are counted by part (backbone, gate, components, rest of the head, classifier).
FLOPs are torch's FlopCounterMode count for one training step, forward and backward, per
image: matmuls and convolutions only (elementwise ops and eigendecompositions are not
counted). With the number of training images (known for the paper's data sets, else
--train-images) it also gives the recipe's total and the GPU-hours that total needs at a
sustained --tflops: an estimate, not a measurement. With --throughput FILE (a benchmark results
file, e.g. docs/results/benchmarks/cuda_h200_b256.json), the rows that file measured also get
GPU-hours at their measured training rate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gmsop.analysis.published import PAPER_DATA, PUBLISHED
from gmsop.data import MissingDataError, build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.paths import CONFIG_DIR

PAPER_DIR = CONFIG_DIR / "experiment" / "paper"
HEAD_PARTS = ("gate", "components")


@dataclass
class Cost:
    experiment: str
    params: dict[str, int]  # part -> parameters
    feature_map: tuple[int, int, int]  # C x H x W the head sees
    feature_dim: int
    gflop_per_image: float  # one training step, forward + backward
    epochs: int
    train_images: Optional[int]
    measured_as: str = ""  # the key a throughput benchmark names this model by ("" if none applies)

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    def total_flop(self) -> Optional[float]:
        return None if self.train_images is None else self.gflop_per_image * 1e9 * self.train_images * self.epochs

    def gpu_hours(self, tflops: float) -> Optional[float]:
        total = self.total_flop()
        return None if total is None else total / (tflops * 1e12) / 3600

    def measured_hours(self, rates: Mapping[str, float]) -> Optional[float]:
        """GPU-hours for the recipe at a measured training rate (images/s), where one applies."""
        rate = rates.get(self.measured_as)
        if rate is None or self.train_images is None:
            return None
        return self.epochs * self.train_images / rate / 3600


def head_key(backbone: str, image_size: int, head: Mapping[str, Any]) -> str:
    """How the throughput benchmark (benchmarks/suite.py, section d: the paper's ResNet-18 at
    64x64) names a model: backbone, input size, head name, and N-K for a mixture."""
    mixture = f"-{head['num_components']}-{head['k']}" if "num_components" in head else ""
    return f"{backbone}@{image_size}/{head['name']}{mixture}"


class MeasuredRates(NamedTuple):
    rates: dict[str, float]  # head_key -> training images/s
    label: str  # where they were measured (GPU, batch, precision)


def measured_rates(path: Path) -> MeasuredRates:
    """Training images/s per model from a benchmark results file (section d of benchmarks/suite.py)."""
    found = json.loads(Path(path).read_text())
    rates = {}
    for row in found.get("rows", []):
        if row.get("section") == "d":
            head = {"name": row["cfg"]["name"], **row["cfg"]}
            if head["name"] in ("gmsop", "gmgap"):
                head.setdefault("num_components", 16)
                head.setdefault("k", 8)
            rates[head_key("resnet18_64", 64, head)] = float(row["images_per_s"])
    env = found.get("env", {})
    precision = "AMP" if found.get("amp") else "fp32"
    label = f"{env.get('gpu') or env.get('device', '?')}, B={found.get('batch')}, {precision}"
    return MeasuredRates(rates, label)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per part: the top-level module, with a mixture head split into gate/components."""
    parts: Counter[str] = Counter()
    for name, p in model.named_parameters():
        top, _, rest = name.partition(".")
        sub = rest.split(".", 1)[0]
        parts[f"{top}.{sub}" if top == "head" and sub in HEAD_PARTS else top] += p.numel()
    return dict(parts)


def training_flops_per_image(model: SecondOrderClassifier, channels: int, image_size: int, batch: int = 2) -> float:
    """Matmul/conv FLOPs of one training step (forward + backward) divided by the batch size."""
    model.train()
    images = torch.randn(batch, channels, image_size, image_size)
    labels = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model.compute_loss(images, labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def _data_shape(cfg: DictConfig) -> tuple[int, int]:
    """(classes, channels) from cfg's data module, which needs its data to be here."""
    try:
        data = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    except MissingDataError as err:
        raise MissingDataError(
            f"{cfg.name}: give --classes (and --channels if not 3); the data is not here to count: {err}"
        ) from None
    return data.num_classes, data.num_channels


def experiment_cost(
    cfg: DictConfig, classes: Optional[int] = None, channels: Optional[int] = None, train_images: Optional[int] = None
) -> Cost:
    """Build cfg's model (random weights) and count its parameters and training FLOPs.

    Classes, channels and training images come from the arguments, else (for a paper row)
    the paper's data set, else the data module.
    """
    if cfg.name in PUBLISHED:
        paper = PAPER_DATA[PUBLISHED[cfg.name].table]
        classes, channels = classes or paper.classes, channels or paper.channels
        train_images = train_images or paper.train_images
    if classes is None or channels is None:
        found = _data_shape(cfg)
        classes, channels = classes or found[0], channels or found[1]
    container = OmegaConf.to_container(cfg, resolve=True)
    model = SecondOrderClassifier(container["model"], container["head"], container["optim"], classes, channels)
    size = cfg.data.image_size
    with torch.no_grad():
        fmap = model.backbone(torch.zeros(1, channels, size, size)).shape[1:]
    return Cost(
        cfg.name,
        parameter_breakdown(model),
        tuple(fmap),
        model.head.out_dim,
        training_flops_per_image(model, channels, size) / 1e9,
        cfg.trainer.max_epochs,
        train_images,
        head_key(container["model"]["backbone"], size, container["head"]),
    )


def markdown_table(costs: Sequence[Cost], tflops: float, measured: Optional[MeasuredRates] = None) -> str:
    """The --paper table; with `measured`, also GPU-hours at the measured training rates."""
    extra = f" GPU-hours, measured rate ({measured.label}) |" if measured else ""
    lines = [
        "| experiment | params (M) | published (M) | feature map | dim | GFLOP / image / step | epochs "
        f"| total FLOP | GPU-hours at {tflops:g} TFLOP/s (estimate) |{extra}",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if measured else ""),
    ]
    for c in costs:
        pub = PUBLISHED.get(c.experiment)
        total, hours = c.total_flop(), c.gpu_hours(tflops)
        row = (
            f"| {c.experiment} | {c.total_params / 1e6:.2f} | {pub.params_m if pub and pub.params_m else ''} "
            f"| {'x'.join(map(str, c.feature_map))} | {c.feature_dim} | {c.gflop_per_image:.2f} | {c.epochs} "
            f"| {'' if total is None else f'{total:.1e}'} | {'' if hours is None else f'{hours:.1f}'} |"
        )
        if measured:
            at_rate = c.measured_hours(measured.rates)
            rate = measured.rates.get(c.measured_as)
            row += "" if at_rate is None else f" {at_rate:.1f} ({rate:.0f} img/s)"
            row += " |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def describe(c: Cost, tflops: float) -> str:
    parts = ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in c.params.items())
    lines = [
        f"{c.experiment}: {c.total_params:,} parameters ({parts})",
        f"  head input {'x'.join(map(str, c.feature_map))}, feature dim {c.feature_dim}",
        f"  {c.gflop_per_image:.2f} GFLOP per image per training step (matmul/conv, forward + backward)",
    ]
    if c.train_images is not None:
        lines.append(
            f"  {c.epochs} epochs x {c.train_images:,} images: {c.total_flop():.2e} FLOP, "
            f"{c.gpu_hours(tflops):.1f} GPU-hours at a sustained {tflops:g} TFLOP/s (estimate)"
        )
    return "\n".join(lines)
