"""Hydra composition: every config composes; unknown keys, bad types and unknown names fail early."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from gmsop.data import DATA
from gmsop.heads import HEADS
from gmsop.paths import CONFIG_DIR
from gmsop.run import compose as config
from gmsop.run.compose import register_configs
from tests.conftest import REPO as REPO_ROOT

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


def test_any_trainer_argument_passes_through_and_limits_keep_int_vs_fraction():
    import lightning as L

    from gmsop.config import RUN_CONTROL_KEYS, TRAINER_SET_BY_THE_RUN

    cfg = compose_train(
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=0.25",
        "trainer.max_steps=7",
        "trainer.accumulate_grad_batches=2",
        "trainer.profiler=simple",
        "trainer.overfit_batches=3",
    )
    t = cfg.trainer
    assert (t.limit_train_batches, type(t.limit_train_batches)) == (1, int)  # one batch, not 100 %
    assert (t.limit_val_batches, t.max_steps, t.accumulate_grad_batches, t.profiler) == (0.25, 7, 2, "simple")
    assert (t.overfit_batches, type(t.overfit_batches)) == (3, int)
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", *TRAINER_SET_BY_THE_RUN}
    assert set(t) == accepted | set(RUN_CONTROL_KEYS)  # every Trainer argument, no hand-kept list
    with pytest.raises(ConfigCompositionException, match="trainer.max_steps=abc"):
        compose_train("trainer.max_steps=abc")
    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose_train("trainer.max_stepz=3")


def test_loggers_combine_as_a_list():
    cfg = compose_train("logger=[tensorboard,no_wandb]")
    assert (cfg.logger.tensorboard.enabled, cfg.logger.wandb.enabled) == (True, False)
    cfg = compose_train("logger=tensorboard")
    assert (cfg.logger.tensorboard.enabled, cfg.logger.wandb.enabled) == (True, True)


def test_help_lists_what_users_pick_and_leaves_config_values_alone():
    from gmsop.run.compose import tidy_help

    hydra_help = (
        "== Configuration groups ==\n"
        "data: cifar, cifar_defaults, digits, digits_defaults\n"
        "experiment/paper: imagenet64_resnet18_gap\n"
        "experiment/sweeps: fashion_lr, gmsop_digits\n"
        "head/gate: noisy_top_k, noisy_top_k_defaults\n"
        "\n== Config ==\n"
        "name: my_defaults\n"
        "experiment/sweeps: not a group here\n"
    )
    assert tidy_help(hydra_help).splitlines() == [
        "== Configuration groups ==",
        "data: cifar, digits",
        "experiment/paper: imagenet64_resnet18_gap",
        "head/gate: noisy_top_k",
        "",
        "== Config ==",
        "name: my_defaults",
        "experiment/sweeps: not a group here",
    ]


def test_callbacks_compose_as_a_list_of_options():
    from lightning.pytorch.callbacks import EarlyStopping

    from gmsop.callbacks.model_summary import ModelSummaryWithoutFlops
    from gmsop.callbacks.usage_plots import ComponentUsagePlots
    from gmsop.run.compose import compose_train
    from gmsop.run.training import configured_callbacks

    cfg = compose_train(["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=3"])
    built = configured_callbacks(OmegaConf.to_container(cfg.callbacks))
    assert [type(c) for c in built] == [ComponentUsagePlots, ModelSummaryWithoutFlops, EarlyStopping]
    assert (built[2].monitor, built[2].patience, built[2].mode) == ("val/top1_err", 3, "min")
    assert configured_callbacks(OmegaConf.to_container(compose_train(["callbacks=none"]).callbacks)) == []
    rich = configured_callbacks(OmegaConf.to_container(compose_train(["callbacks=[default,rich]"]).callbacks))
    names = [type(c).__name__ for c in rich]
    assert names == ["ComponentUsagePlots", "RichModelSummaryWithoutFlops", "RichProgressBar"]


def test_rich_model_summary_prints_the_table_without_flops(capsys):
    from lightning.pytorch.utilities.model_summary import get_human_readable_count, summarize

    from gmsop.callbacks.model_summary import RichModelSummaryWithoutFlops
    from gmsop.models.classifier import SecondOrderClassifier

    model = SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, {}, 10, 1)
    summary = summarize(model, max_depth=1)
    RichModelSummaryWithoutFlops.summarize(
        summary._get_summary_data(),
        summary.total_parameters,
        summary.trainable_parameters,
        summary.model_size,
        summary.total_training_modes,
        total_flops=0,
    )
    out = capsys.readouterr().out
    assert "backbone" in out and "Params" in out and "Mode" in out
    assert f"Total params: {get_human_readable_count(summary.total_parameters)}" in out
    assert "FLOPs" not in out and "Flops" not in out


def test_trainer_slurm_outside_a_slurm_job_is_refused_by_name():
    from gmsop.registry import ConfigError
    from gmsop.run.compose import check_slurm_environment

    with pytest.raises(ConfigError, match=r"trainer=slurm names the run folder after \$SLURM_JOB_ID, which is not set"):
        check_slurm_environment(["experiment=x", "trainer=slurm"], {})
    check_slurm_environment(["trainer=slurm"], {"SLURM_JOB_ID": "42"})  # inside a job: fine
    check_slurm_environment(["trainer=ddp"], {})  # not asked for: fine


def test_a_run_folder_that_cannot_be_created_is_named_before_hydra_tries(tmp_path, monkeypatch):
    """Hydra creates the run folder first and failed with its own OSError traceback."""
    from gmsop.registry import ConfigError
    from gmsop.run.compose import check_output_folder

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match=r"runs_dir=.*a_file/runs: .*a_file is a file, not a folder"):
        check_output_folder([f"runs_dir={tmp_path / 'a_file' / 'runs'}"])
    read_only = tmp_path / "shared"
    read_only.mkdir()
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != read_only)  # (root writes anywhere)
    with pytest.raises(ConfigError, match=r"hydra.run.dir=.*shared/x/y: .*shared cannot be written"):
        check_output_folder(["head=gap", f"hydra.run.dir={read_only / 'x' / 'y'}", f"runs_dir={tmp_path}"])
    check_output_folder([f"runs_dir={tmp_path / 'new' / 'runs'}"])  # a folder to be made in a writable one
    assert not (tmp_path / "new").exists()


def test_an_optional_logger_without_its_package_names_the_extra(monkeypatch):
    import sys

    from gmsop.errors import MissingExtraError
    from gmsop.run.loggers import check_logger_config

    cfg = config.compose_train(["logger=mlflow"])
    check_logger_config(cfg.logger)  # installed here (requirements.txt)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as in an install without the extra
    with pytest.raises(MissingExtraError, match=r"logger=mlflow .* pip install 'gmsop\[mlflow\]'"):
        check_logger_config(cfg.logger)
