"""The LightningModule: loss, metrics, optimiser/schedule from config, non-finite loss errors."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from gmsop.data import build_datamodule
from gmsop.heads import HeadOutput
from gmsop.models.classifier import NonFiniteLossError, SecondOrderClassifier, build_optimiser
from gmsop.registry import ConfigError

SGD = {
    "name": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "scheduler": "multistep",
    "milestones": [2, 4],
    "gamma": 0.1,
    "min_lr": 0.0,
}


def _model(head="gap", optim=SGD):
    return SecondOrderClassifier({"backbone": "resnet18_64", "dropout": 0.1}, {"name": head}, optim, 10, 1)


def test_multistep_schedule_matches_the_recipe():
    params = [torch.nn.Parameter(torch.zeros(1))]
    cfg = build_optimiser(params, SGD, max_epochs=6)
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert cfg["lr_scheduler"]["interval"] == "epoch"


def test_adamw_cosine_and_no_schedule():
    params = [torch.nn.Parameter(torch.zeros(1))]
    cfg = build_optimiser(params, {**SGD, "name": "adamw", "lr": 1e-3, "scheduler": "cosine", "min_lr": 1e-5}, 10)
    assert isinstance(cfg["optimizer"], torch.optim.AdamW)
    assert isinstance(cfg["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert isinstance(build_optimiser(params, {**SGD, "scheduler": "none"}, 10), torch.optim.SGD)


def test_unknown_optimiser_or_scheduler_fails_at_construction():
    with pytest.raises(ConfigError, match="unknown optim.name='rmsprop'; allowed: sgd, adamw"):
        _model(optim={**SGD, "name": "rmsprop"})
    with pytest.raises(ConfigError, match="unknown optim.scheduler='poly'"):
        _model(optim={**SGD, "scheduler": "poly"})


def test_forward_shapes_and_checkpoint_hparams():
    model = _model("isqrt")
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert model.hparams["head"] == {"name": "isqrt"} and model.hparams["num_classes"] == 10


def test_non_finite_loss_names_the_step_and_the_head(tmp_path):
    model = _model("gap")
    model.head.register_forward_hook(
        lambda mod, inp, out: HeadOutput(out.features * float("nan"), out.aux_loss, out.stats)
    )
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at global step 0 .* head 'gap'"):
        trainer.fit(model, datamodule=build_datamodule({"name": "digits", "batch_size": 16}))


def test_each_config_is_validated_once():
    """GM-SOP-16-8: the head, its gate's pooling and its component pooling, each once (not per component)."""
    from unittest import mock

    from gmsop.heads import HEADS

    paths = []
    validate = HEADS.validate
    with mock.patch.object(
        HEADS, "validate", side_effect=lambda cfg, path=None: paths.append(path) or validate(cfg, path)
    ):
        SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gmsop"}, {"name": "sgd"}, 10, 3)
    assert sorted(paths) == ["head", "head.component_pooling", "head.gate.pooling"]
