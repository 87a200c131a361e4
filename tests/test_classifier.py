"""The LightningModule: loss, metrics, optimiser/schedule from config, non-finite loss errors."""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import pytest
import torch

from gmsop.config import OptimConfig
from gmsop.data import build_datamodule
from gmsop.heads import HeadOutput
from gmsop.models.classifier import NonFiniteLossError, SecondOrderClassifier
from gmsop.models.learning_rate import learning_rate
from gmsop.models.optimisation import PARTS, build_optimiser
from gmsop.registry import ConfigError

SGD = asdict(OptimConfig(milestones=[2, 4]))  # the schema's defaults, but milestones=[2, 4]


def _model(head="gap", optim=SGD):
    return SecondOrderClassifier({"backbone": "resnet18_64", "dropout": 0.1}, {"name": head}, optim, 10, 1)


def test_multistep_schedule_matches_the_recipe():
    params = [torch.nn.Parameter(torch.zeros(1))]
    cfg = build_optimiser(params, SGD, max_epochs=6, lr=learning_rate(SGD, 256))
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
    adamw = {**SGD, "name": "adamw", "lr": 1e-3, "scheduler": "cosine", "min_lr": 1e-5}
    cfg = build_optimiser(params, adamw, 10, learning_rate(adamw, 256))
    assert isinstance(cfg["optimizer"], torch.optim.AdamW)
    assert isinstance(cfg["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert isinstance(
        build_optimiser(params, {**SGD, "scheduler": "none"}, 10, learning_rate(SGD, 256)), torch.optim.SGD
    )


def test_fine_tuning_recipe_part_learning_rates_no_decay_groups_and_frozen_stages():
    """fast-MPN-COV's fine-tuning recipe: the new classifier at 5x, BN/bias without weight decay,
    the first stages frozen (no gradient, no update, BN statistics fixed)."""
    optim = {
        **SGD,
        "lr": 0.01,
        "weight_decay": 1e-3,
        "lr_mult": {"classifier": 5.0, "head": 5.0},
        "no_decay_bn_bias": True,
    }
    model = SecondOrderClassifier(
        {"backbone": "resnet18_64", "freeze_stages": 2}, {"name": "isqrt", "reduce_dim": 8}, optim, 10, 1
    )
    parts = {part: getattr(model, part) for part in PARTS}
    opt = build_optimiser(parts, optim, 3, lr=learning_rate(optim, 256))["optimizer"]
    groups = {g["name"]: g for g in opt.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {
            "backbone": 0.01,
            "backbone/no_decay": 0.01,
            "head": 0.05,
            "head/no_decay": 0.05,
            "classifier": 0.05,
            "classifier/no_decay": 0.05,
        }
    )
    assert all(g["weight_decay"] == (0.0 if n.endswith("no_decay") else 1e-3) for n, g in groups.items())
    assert all(p.ndim <= 1 for n, g in groups.items() if n.endswith("no_decay") for p in g["params"])
    frozen = [p for m in (model.backbone.model.stem, model.backbone.model.stages[0]) for p in m.parameters()]
    trained = list(model.backbone.model.stages[1].parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    in_optimiser = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimiser for p in frozen) and all(id(p) in in_optimiser for p in trained)
    before = {k: v.clone() for k, v in model.backbone.model.stem.state_dict().items()}
    model.train()
    loss = model.compute_loss(torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])).loss
    loss.backward()
    opt.step()
    after = model.backbone.model.stem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics unchanged
    with pytest.raises(ConfigError, match=r"optim.lr_mult has unknown part\(s\) \['neck'\]"):
        build_optimiser({"head": torch.nn.Linear(2, 2)}, {**SGD, "lr_mult": {"neck": 2.0}}, 3, learning_rate(SGD, 256))
    with pytest.raises(ConfigError, match="model.freeze_stages=9; resnet18_64 has 5 stages"):
        SecondOrderClassifier({"backbone": "resnet18_64", "freeze_stages": 9}, {"name": "gap"}, SGD, 10, 1)


def test_unknown_optimiser_or_scheduler_fails_at_construction():
    with pytest.raises(ConfigError, match="unknown optim.name='rmsprop'; allowed: sgd, adamw"):
        _model(optim={**SGD, "name": "rmsprop"})
    with pytest.raises(ConfigError, match="unknown optim.scheduler='poly'"):
        _model(optim={**SGD, "scheduler": "poly"})


@pytest.mark.parametrize(
    "head, bn, expected",
    [
        ({"name": "gmsop", "num_components": 4, "k": 2, "component_dims": [16, 8], "gate_dims": [8]}, None, True),
        ({"name": "gmgap", "num_components": 4, "k": 2, "component_dims": [16], "gate_dims": [8]}, None, True),
        ({"name": "isqrt"}, None, False),
        ({"name": "gap"}, None, False),
        ({"name": "isqrt"}, True, True),  # model.bn, when set, wins
        ({"name": "gmsop", "num_components": 4, "k": 2, "component_dims": [16, 8], "gate_dims": [8]}, False, False),
    ],
)
def test_classifier_batchnorm_defaults_to_the_heads_choice(head, bn, expected):
    """model.bn=null: BN after a mixture's fusion, none for the baselines (as the release builds them);
    the checkpoint records the resolved value."""
    model = SecondOrderClassifier({"backbone": "resnet18_64", "bn": bn}, head, SGD, 10, 1)
    assert isinstance(model.classifier[0], torch.nn.BatchNorm1d) == expected
    assert model.hparams["model"]["bn"] is expected


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


def test_backbone_warm_up_trains_only_head_and_classifier_then_everything(tmp_path):
    """model.freeze_backbone_epochs=1 through Lightning's fit: epoch 0 leaves every backbone
    weight and BatchNorm statistic as it was while head and classifier learn; epoch 1 trains
    the backbone too. Stages frozen by model.freeze_stages stay frozen throughout."""

    def snapshot(module):
        return {k: v.clone() for k, v in module.state_dict().items()}

    model = SecondOrderClassifier(
        {"backbone": "resnet18_64", "freeze_backbone_epochs": 1, "freeze_stages": 1}, {"name": "gap"}, SGD, 10, 1
    )
    data = build_datamodule({"name": "digits", "batch_size": 16})
    backbone0, classifier0 = snapshot(model.backbone), snapshot(model.classifier)
    after_epoch = []

    class Snapshots(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            after_epoch.append(snapshot(pl_module.backbone))

    L.Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[Snapshots()],
    ).fit(model, datamodule=data)
    backbone1, backbone2 = after_epoch
    assert all(torch.equal(backbone0[k], backbone1[k]) for k in backbone0)  # weights and running statistics
    assert not torch.equal(classifier0["2.weight"], model.classifier[2].weight)
    changed = {k for k in backbone0 if not torch.equal(backbone1[k], backbone2[k])}
    assert "model.stages.0.0.conv1.weight" in changed and "model.stages.0.0.bn1.running_mean" in changed
    assert not any(k.startswith("model.stem.") for k in changed)  # freeze_stages=1: the stem, for good
    with pytest.raises(ConfigError, match=r"model.freeze_backbone_epochs=-1; allowed: >= 0"):
        SecondOrderClassifier({"backbone": "resnet18_64", "freeze_backbone_epochs": -1}, {"name": "gap"}, SGD, 10, 1)


def test_a_head_whose_covariance_the_map_cannot_fill_is_warned_of_before_training():
    """data.image_size=7: a 2 x 2 map for a 128-channel covariance (rank 3) trained without a word."""
    import warnings

    from gmsop.run.build import build_run
    from tests.test_config import compose_train

    with pytest.warns(UserWarning, match=r"rank is at most 3 of 128\. data.image_size=48 or more gives a 12 x 12"):
        _, _, model = build_run(compose_train("head=isqrt", "data.image_size=7"))
    assert model.feature_map == (128, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        build_run(compose_train("head=gap", "data.image_size=7"))  # first-order: nothing to warn of
        build_run(compose_train("head=isqrt", "head.reduce_dim=32"))  # 8 x 8 = 64 positions > 32 channels
