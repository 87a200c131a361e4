"""The LightningModule: timm backbone -> pooling head -> BN/dropout/linear classifier."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from gmsop.callbacks.backbone_warm_up import BackboneWarmUp
from gmsop.callbacks.precise_bn import PreciseBatchNorm
from gmsop.config import ModelConfig
from gmsop.heads import HEADS, HeadOutput
from gmsop.models.compiling import compile_in_place, compile_options
from gmsop.models.factory import SMALL_IMAGE_BACKBONES, create_backbone, weights_from_checkpoint
from gmsop.models.learning_rate import LearningRate, learning_rate, trainer_global_batch
from gmsop.models.optimisation import PARTS, build_optimiser, complete_optim
from gmsop.models.predictions import Predictions
from gmsop.models.usage import ComponentUsage, UsageSummary
from gmsop.registry import ConfigError, complete
from gmsop.run_folder import read_checkpoint

log = logging.getLogger(__name__)
# What every run logs once per epoch (keys in trainer.callback_metrics), e.g. for a sweep's metric.
EPOCH_METRICS = (
    "val/top1_err",
    "val/top5_err",
    "val/loss",
    "val/ce",
    "val/aux_loss",
    "train/top1_err",
    "train/top5_err",
    "train/loss_epoch",
    "train/ce_epoch",
    "train/aux_loss_epoch",
)
EPOCH_METRIC_PREFIXES = ("val/head/", "usage/", "gate/")  # head-specific (e.g. a mixture's usage per component)


class StepOutput(NamedTuple):
    loss: torch.Tensor  # ce + aux_loss
    ce: torch.Tensor
    logits: torch.Tensor
    pooled: HeadOutput


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


class SecondOrderClassifier(L.LightningModule):
    """Image classifier with a pluggable pooling head; loss = cross-entropy + the head's aux loss.

    Built from plain config mappings (saved as hyperparameters), so a checkpoint alone
    rebuilds the model: `SecondOrderClassifier.load_from_checkpoint(path)`.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        head: Mapping[str, Any],
        optim: Mapping[str, Any],
        num_classes: int,
        in_chans: int,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()  # `data` is only recorded, so a checkpoint names its data set (gmsop.eval)
        model = complete(ModelConfig, model, "model", "the model")  # defaults from the schema, not restated here
        head_cfg = HEADS.validate(head, path="head")
        model["bn"] = classifier_bn(model, head_cfg["name"])  # recorded resolved
        optim = complete_optim(optim)  # the schema's defaults, checked
        self.save_hyperparameters()
        self.head_name = head_cfg["name"]
        self.backbone = create_backbone(model, in_chans, HEADS.get(self.head_name).second_order)
        self.head = HEADS.construct(head_cfg, self.backbone.num_features, path="head")
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(self.head.out_dim) if model["bn"] else nn.Identity(),
            nn.Dropout(model["dropout"]),
            nn.Linear(self.head.out_dim, num_classes),
        )
        for key in ("freeze_backbone_epochs", "precise_bn_batches"):
            if model[key] < 0:
                raise ConfigError(f"model.{key}={model[key]}; allowed: >= 0")
        self.channels_last = model["channels_last"]
        self.feature_map: Optional[tuple[int, ...]] = None  # the backbone's (C, H, W), set by run.build
        self.lr_used: Optional[LearningRate] = (
            None  # set by configure_optimizers: the rate and how it follows from optim.lr
        )
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        compile_opts = compile_options(model["compile"])
        if compile_opts is not None:
            compile_in_place((self.backbone, self.head, self.classifier), compile_opts)
        # Component usage of a gated head per split and epoch (see component_usage / gmsop.callbacks.usage_plots).
        self.usage = nn.ModuleDict(
            {f"{split}_usage": ComponentUsage(self.head.num_components) for split in ("train", "val")}
            if self.head.num_components
            else {}
        )
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{k}": MulticlassAccuracy(num_classes, top_k=topk, average="micro")
                for split in ("train", "val")
                for k, topk in (("top1", 1), ("top5", top_k))
            }
        )
        # val losses as means over every image of every process (Lightning's epoch means, unsynced, were
        # each process's own share)
        self.val_losses = nn.ModuleDict({key: MeanMetric() for key in ("loss", "ce", "aux_loss")})

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, map_location: Any = None, strict: bool = True, **hparams: Any
    ) -> SecondOrderClassifier:
        """The model a checkpoint holds (on `map_location`, a device; default the CPU; `hparams`
        replace saved ones), read as
        gmsop.run_folder.read_checkpoint reads every checkpoint: verified against its digest, as data
        only (a file that would run code is refused). The backbone is built without reading
        model.pretrained_file: the checkpoint holds every weight, and the file may have moved."""
        ckpt = read_checkpoint(checkpoint_path)
        with weights_from_checkpoint():
            model = cls(**(dict(ckpt["hyper_parameters"]) | hparams))
        model.load_state_dict(ckpt["state_dict"], strict=strict)
        return model.to(map_location) if map_location is not None else model

    def weights_normalisation(self) -> Optional[tuple[list[float], list[float]]]:
        """The per-channel (mean, std) that the backbone's pretrained timm weights expect, or None:
        trained from scratch, or one of this project's small-image backbones (their weights files
        carry no data config; they were trained on the data's own statistics)."""
        cfg = self.hparams["model"]
        if not cfg["pretrained"] or cfg["backbone"] in SMALL_IMAGE_BACKBONES:
            return None
        return self.backbone.weights_normalisation(self.hparams["in_chans"])

    def forward_pooled(self, x: torch.Tensor) -> HeadOutput:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_pooled(x).features)

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        """The training objective: cross-entropy + the head's auxiliary loss (the one definition,
        also used by gmsop.cost and the benchmarks)."""
        pooled = self.forward_pooled(images)
        logits = self.classifier(pooled.features)
        ce = F.cross_entropy(logits, labels)
        return StepOutput(ce + pooled.aux_loss, ce, logits, pooled)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        loss, ce, logits, pooled = self.compute_loss(images, labels)
        on_step = split == "train"
        if on_step:  # train/loss is the objective (with the head's aux loss); val/loss the classification loss alone
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
            self.log("train/ce", ce, on_step=True, on_epoch=True, batch_size=len(labels))
            self.log("train/aux_loss", pooled.aux_loss, on_step=True, on_epoch=True, batch_size=len(labels))
        else:
            for key, value in (("loss", ce), ("ce", ce), ("aux_loss", pooled.aux_loss)):
                self.val_losses[key].update(value.detach(), weight=len(labels))
        for key, value in pooled.stats.items():
            self.log(f"{split}/head/{key}", value, on_step=on_step, on_epoch=True, batch_size=len(labels))
        if pooled.routing is not None:
            self.usage[f"{split}_usage"].update(pooled.routing, len(labels))
        for k in ("top1", "top5"):
            self.metrics[f"{split}_{k}"].update(logits.detach(), labels)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}) with head '{self.head_name}'; "
                "try a lower optim.lr, precision=32-true, or gradient clipping (trainer.gradient_clip_val)"
            )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    # -- the test stage: once, after training, on the chosen checkpoint --------------------------
    def on_test_epoch_start(self) -> None:
        self._test_batches: list[Predictions] = []
        self.test_predictions: Optional[Predictions] = None

    def test_step(self, batch, batch_idx: int) -> None:
        """Test batches carry each image's index: the per-image predictions are kept (see
        gmsop.models.predictions); the losses are logged as for val."""
        images, labels, index = batch
        _, ce, logits, pooled = self.compute_loss(images, labels)
        for key, value in (("loss", ce), ("ce", ce), ("aux_loss", pooled.aux_loss)):  # loss: classification
            self.log(f"test/{key}", value, on_epoch=True, sync_dist=True, batch_size=len(labels))
        self._test_batches.append(Predictions.from_logits(index, labels, logits))

    def on_test_epoch_end(self) -> None:
        """Every process's predictions joined (each image once), and the errors computed from them:
        exact under DDP too, where a distributed sampler repeats a few images to even out processes."""
        local = Predictions.concatenate(self._test_batches)
        parts = [local]
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            parts = gathered
        self.test_predictions = Predictions.concatenate(parts)
        for key, value in self.test_predictions.errors().items():
            self.log(f"test/{key}", value, sync_dist=False)  # the same on every process

    def component_usage(self, split: str) -> Optional[UsageSummary]:
        """This epoch's component usage of a gated head so far (None for other heads or before any batch)."""
        metric = self.usage[f"{split}_usage"] if f"{split}_usage" in self.usage else None
        return metric.compute() if metric is not None and metric.update_called else None

    def _log_errors(self, split: str) -> None:
        for k in ("top1", "top5"):
            metric = self.metrics[f"{split}_{k}"]
            self.log(f"{split}/{k}_err", 1.0 - metric.compute(), prog_bar=k == "top1", sync_dist=False)
            metric.reset()
        usage = self.component_usage(split)
        if usage is not None:
            self.log_dict(usage.logged(split), sync_dist=False)  # already summed over processes
            self.usage[f"{split}_usage"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_errors("train")

    def configure_callbacks(self) -> list[L.Callback]:
        """The fine-tuning warm-up (model.freeze_backbone_epochs) and the BatchNorm statistics pass
        before each validation (model.precise_bn_batches), whichever Trainer fits this model."""
        epochs = self.hparams.model.get("freeze_backbone_epochs", 0)
        batches = self.hparams.model.get("precise_bn_batches", 0)
        return ([BackboneWarmUp(epochs)] if epochs else []) + ([PreciseBatchNorm(batches)] if batches else [])

    def on_validation_epoch_end(self) -> None:
        for key, mean in self.val_losses.items():
            if mean.update_called:
                self.log(f"val/{key}", mean.compute(), prog_bar=key == "loss", sync_dist=False)  # (already summed)
                mean.reset()
        self._log_errors("val")

    def configure_optimizers(self):
        parts = {name: getattr(self, name) for name in PARTS}
        global_batch, steps_per_epoch = trainer_global_batch(
            self.trainer, need_steps=self.hparams.optim["warmup_epochs"] > 0
        )
        self.lr_used = learning_rate(self.hparams.optim, global_batch)
        log.info(self.lr_used.describe())  # every process: each DDP process's log says what it trains at
        return build_optimiser(parts, self.hparams.optim, self.trainer.max_epochs, self.lr_used, steps_per_epoch)


def classifier_bn(model: Mapping[str, Any], head_name: Optional[str]) -> bool:
    """Whether BatchNorm1d normalises the pooled vector before the classifier: model.bn, or when it
    is null (the default) the head's own choice, `classifier_bn` (the release's networks: after a
    mixture's fusion, not for the baselines)."""
    if model.get("bn") is not None:
        return bool(model["bn"])
    return bool(HEADS.get(head_name).classifier_bn) if head_name in HEADS.names() else True
