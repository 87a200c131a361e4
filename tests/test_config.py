"""Hydra composition: every config composes; unknown keys, bad types and unknown names fail early."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from gmsop.run import compose as config
from gmsop.run.compose import register_configs
from gmsop.data import DATA
from gmsop.heads import HEADS
from gmsop.paths import CONFIG_DIR, REPO_ROOT

register_configs()
EXPERIMENTS = sorted(
    str(p.relative_to(REPO_ROOT / "experiments").with_suffix(""))
    for p in (REPO_ROOT / "experiments").rglob("*.yaml")
    if "sweeps" not in p.parts  # W&B sweep files, tested in test_sweep.py
)


def compose_train(*overrides: str):
    return config.compose_train(overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    cfg = compose_train(f"experiment={experiment}")
    HEADS.validate(cfg.head)
    DATA.validate(cfg.data)
    assert cfg.optim.name in ("sgd", "adamw")


@pytest.mark.parametrize("head", sorted(p.stem for p in (CONFIG_DIR / "head").glob("*.yaml")))
def test_every_head_config_composes(head):
    cfg = compose_train(f"head={head}")
    assert HEADS.validate(cfg.head)["name"] in HEADS.names()


def test_default_experiment_is_gmsop_16_8_on_digits():
    cfg = compose_train("experiment=default")
    assert (cfg.head.name, cfg.head.num_components, cfg.head.k) == ("gmsop", 16, 8)
    assert list(cfg.head.component_dims) == [256, 128] and cfg.data.name == "digits"
    assert cfg.model.backbone == "resnet18_64" and cfg.model.dropout == 0.2
    assert cfg.logger.wandb.mode == "offline"


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("trainer.max_epoch=3")
    assert "max_epoch" in str(err.value.__cause__ or err.value)


def test_bad_type_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("trainer.max_epochs=three")
    text = str(err.value) + str(err.value.__cause__)
    assert "max_epochs" in text and "three" in text


def test_unknown_head_option_lists_the_known_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("head=nope")
    assert "head/nope" in str(err.value) and "isqrt" in str(err.value)


def test_ddp_trainer_config():
    cfg = compose_train("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
    assert OmegaConf.select(cfg, "trainer.precision") == "16-mixed"
