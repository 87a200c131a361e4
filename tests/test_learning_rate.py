"""optim.lr is a base rate for optim.lr_reference_batch images, scaled to the global batch; the
optional warm-up multiplies into the epoch schedule (gmsop.models.learning_rate)."""

from __future__ import annotations

import math
from dataclasses import asdict

import lightning as L
import pytest
import torch

from gmsop.config import OptimConfig
from gmsop.data import build_datamodule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.models.learning_rate import learning_rate
from gmsop.models.optimisation import build_optimiser
from gmsop.registry import ConfigError
from tests.test_config import compose_train

DEFAULTS = asdict(OptimConfig())


def test_rate_is_the_base_rate_scaled_linearly_or_by_square_root_to_the_global_batch():
    assert DEFAULTS["lr_reference_batch"] == 256 and DEFAULTS["lr_scaling"] == "linear"
    assert learning_rate(DEFAULTS, 64).rate == pytest.approx(0.1 * 64 / 256, rel=1e-15)
    assert learning_rate(DEFAULTS, 512).rate == pytest.approx(0.2, rel=1e-15)
    assert learning_rate({**DEFAULTS, "lr_scaling": "sqrt"}, 64).rate == pytest.approx(0.05, rel=1e-15)
    assert learning_rate({**DEFAULTS, "lr_scaling": "sqrt"}, 1024).rate == pytest.approx(0.2, rel=1e-15)
    assert learning_rate({**DEFAULTS, "lr_scaling": "none"}, 64).rate == 0.1  # a fixed rate
    assert learning_rate({**DEFAULTS, "lr_reference_batch": 150, "lr": 0.09}, 150).rate == 0.09
    sqrt = learning_rate({**DEFAULTS, "lr_scaling": "sqrt"}, 32)
    assert sqrt.base_for(sqrt.rate) == pytest.approx(0.1, rel=1e-15)  # gmsop.lr_find's base rate
    assert learning_rate(DEFAULTS, 64).describe().startswith("learning rate 0.025 = optim.lr 0.1 x (64 / 256)")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lr_scaling", "cubic", "unknown optim.lr_scaling='cubic'; allowed: linear, sqrt, none"),
        ("lr_reference_batch", 0, r"optim.lr_reference_batch=0; allowed: >= 1 \(images\)"),
        ("warmup_epochs", -1.0, r"optim.warmup_epochs=-1.0; allowed: >= 0"),
        ("warmup_start_factor", 0.0, r"optim.warmup_start_factor=0.0; allowed: in \(0, 1\]"),
    ],
)
def test_bad_scaling_or_warm_up_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, {**DEFAULTS, key: value}, 10, 1)


def _lrs_of_a_run(optim: dict, steps_per_epoch: int, epochs: int) -> list[float]:
    """The rate at each optimiser step, schedules stepped as Lightning steps them: the warm-up after
    every optimiser step, the epoch schedule after every epoch."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    configured = build_optimiser(params, optim, epochs, lr=learning_rate(optim, 64), steps_per_epoch=steps_per_epoch)
    opt, (epoch_schedule, warmup) = configured[0][0], (c["scheduler"] for c in configured[1])
    lrs = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            warmup.step()
        epoch_schedule.step()
    return lrs


def test_warm_up_rises_linearly_over_its_steps_and_multiplies_into_the_step_schedule():
    optim = {**DEFAULTS, "milestones": [1], "warmup_epochs": 1.5, "warmup_start_factor": 0.1}
    lrs = _lrs_of_a_run(optim, steps_per_epoch=4, epochs=3)  # warm-up: ceil(1.5 x 4) = 6 steps
    rate = 0.1 * 64 / 256
    expected = [rate * (0.1 + 0.9 * min(t, 6) / 6) * (0.1 if t >= 4 else 1.0) for t in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_warm_up_multiplies_into_the_cosine_schedule():
    optim = {**DEFAULTS, "scheduler": "cosine", "min_lr": 0.0, "warmup_epochs": 1.0, "warmup_start_factor": 0.5}
    lrs = _lrs_of_a_run(optim, steps_per_epoch=5, epochs=4)
    rate = 0.1 * 64 / 256
    expected = [rate * (0.5 + 0.5 * min(t, 5) / 5) * (1 + math.cos(math.pi * (t // 5) / 4)) / 2 for t in range(20)]
    assert lrs == pytest.approx(expected, rel=1e-12)


class RatesSeen(L.Callback):
    """Every parameter group's rate at the first training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(self, "rates"):
            self.rates = [g["lr"] for g in trainer.optimizers[0].param_groups]


@pytest.mark.parametrize(
    "scaling, batch, accumulate, expected",
    [
        ("linear", 32, 1, 0.1 * 32 / 256),
        ("linear", 32, 2, 0.1 * 64 / 256),  # accumulated batches count: 64 images per optimiser step
        ("sqrt", 64, 1, 0.1 * math.sqrt(64 / 256)),
        ("none", 64, 1, 0.1),
    ],
)
def test_a_run_trains_at_the_base_rate_scaled_to_its_global_batch(scaling, batch, accumulate, expected):
    optim = {**DEFAULTS, "lr_scaling": scaling, "lr_mult": {"backbone": 1.0, "head": 1.0, "classifier": 2.0}}
    model = SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, optim, 10, 1)
    seen = RatesSeen()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=accumulate,
        limit_val_batches=0,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seen],
    )
    trainer.fit(model, datamodule=build_datamodule({"name": "digits", "batch_size": batch, "image_size": 16}))
    assert model.lr_used.global_batch == batch * accumulate
    assert model.lr_used.rate == pytest.approx(expected, rel=1e-15)
    assert seen.rates == pytest.approx([expected, 2 * expected], rel=1e-15)  # backbone, classifier (GAP has none)


# The paper's rates at its batches (the GM-SOP release's training scripts), per experiment.
PAPER_RATES = {
    "imagenet64_resnet18_gap": (256, 0.075),
    "imagenet64_resnet18_gmgap_16_8": (256, 0.075),
    "imagenet64_resnet18_gmsop_16_8": (256, 0.1),
    "imagenet64_resnet18_srsop": (256, 0.15),
    "imagenet64_wrn36_2_gmgap_16_8": (150, 0.1),
    "imagenet64_wrn36_2_gmsop_16_8": (150, 0.09),
    "places365_resnet18_gap": (256, 0.1),
    "places365_resnet18_gmgap_16_8": (256, 0.1),
    "places365_resnet18_gmsop_16_8": (256, 0.1),
    "places365_resnet18_parametric_srsop": (256, 0.1),
    "places365_resnet18_sop": (256, 0.1),
    "places365_resnet18_srsop": (256, 0.1),
}


@pytest.mark.parametrize("experiment", sorted(PAPER_RATES))
def test_every_paper_experiment_trains_at_the_papers_rate_at_the_papers_batch(experiment):
    cfg = compose_train(f"experiment=paper/{experiment}")
    batch, rate = PAPER_RATES[experiment]
    global_batch = cfg.data.batch_size * cfg.trainer.accumulate_grad_batches
    assert global_batch == batch
    assert learning_rate(cfg.optim, global_batch).rate == rate  # exactly: the scale factor is 1
    assert cfg.optim.warmup_epochs == 0  # the paper has no warm-up


def test_the_paper_rate_table_covers_every_paper_experiment():
    from tests.test_config import CONFIG_DIR

    assert set(PAPER_RATES) == {p.stem for p in (CONFIG_DIR / "experiment" / "paper").glob("*.yaml")}


def test_a_heads_default_base_rate_gives_way_to_any_rate_stated_later():
    """head=isqrt and head=gmsop bring their own default optim.lr (configs/head/); the command line,
    an experiment or another optim option replaces it, and other heads keep the schema's."""
    assert compose_train("head=isqrt").optim.lr == 0.2
    assert compose_train("head=gmsop").optim.lr == 0.05
    assert compose_train("head=gmgap").optim.lr == compose_train("head=gap").optim.lr == DEFAULTS["lr"]
    assert compose_train("head=isqrt", "optim.lr=0.3").optim.lr == 0.3
    assert compose_train("head=isqrt", "optim=adamw_cosine").optim.lr == 1e-3
    assert compose_train("experiment=isqrt_digits").optim.lr == 0.01
    assert compose_train("experiment=ablations/fashion_heads", "head=isqrt").optim.lr == 0.01


@pytest.mark.parametrize("batch, world_size", [(32, 1), (64, 1), (64, 2), (1024, 1)])
def test_the_data_modules_batches_per_epoch_are_what_its_loader_yields(batch, world_size):
    """The warm-up's length comes from the data module without building a loader (a loader built
    in configure_optimizers, before a resumed run's state is restored, trained from the wrong place)."""
    dm = build_datamodule({"name": "digits", "batch_size": batch, "image_size": 8})
    dm.setup("fit")
    per_process = batch // world_size
    samples = math.ceil(len(dm._train) / world_size)
    expected = samples // per_process if samples > per_process else 1
    assert dm.train_batches_per_epoch(world_size) == expected
    if world_size == 1:
        assert dm.train_batches_per_epoch(1) == len(dm.train_dataloader())
