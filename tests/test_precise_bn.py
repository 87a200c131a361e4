"""Precise BatchNorm (model.precise_bn_batches): the statistics a model is validated and tested with
are those of its current weights, computed over the pass's batches; independent reference: each
BatchNorm layer's inputs recorded by hooks, their per-call means and unbiased variances averaged."""

from __future__ import annotations

import copy
import csv
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gmsop.callbacks.precise_bn import reestimate_batchnorm, trained_batchnorms
from gmsop.data.base import ImageDataModule
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run.build import build_run
from gmsop.run.training import RunInterrupted, run_training
from gmsop.run_folder import read_curves
from tests.test_config import compose_train
from tests.test_exact_resume import Killed

GMSOP = ("head=gmsop", "head.num_components=4", "head.k=2", "head.component_dims=[32,16]", "head.gate_dims=[32,16]")


def reference_statistics(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per trained BatchNorm layer (by name): the mean over the calls it received of its input's
    per-channel mean and unbiased variance, with that layer (and every other trained one) normalising
    by batch statistics and the rest of the model in evaluation mode."""
    model = copy.deepcopy(model).eval()
    norms = {name: m for name, m in model.named_modules() if m in set(trained_batchnorms(model))}
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in norms}
    hooks = []
    for name, m in norms.items():
        m.train()
        m.momentum = 0.0  # (so the layer's own running statistics play no part)

        def record(module, args, name=name):
            x = args[0].double()
            dims = [0] + list(range(2, x.dim()))
            seen[name].append((x.mean(dims), x.var(dims, unbiased=True)))

        hooks.append(m.register_forward_pre_hook(record))
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return {
        name: (torch.stack([s[0] for s in calls]).mean(0), torch.stack([s[1] for s in calls]).mean(0))
        for name, calls in seen.items()
        if calls
    }


def _trained_model(*overrides: str):
    """A small model after 6 SGD steps at a high rate (statistics lagging the weights), its data module and batches."""
    cfg = compose_train(*GMSOP, "data.image_size=16", "optim.lr=2.0", "seed=3", *overrides)
    _, datamodule, model = build_run(cfg)
    datamodule.setup("fit")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for images, labels in list(datamodule.train_dataloader())[:6]:
        opt.zero_grad()
        model.compute_loss(datamodule.transform(images, True), labels).loss.backward()
        opt.step()
    batches = list(datamodule.statistics_batches(5, epoch=0))
    return model, datamodule, batches


def test_reestimated_statistics_equal_those_computed_directly_over_the_batches():
    model, _, batches = _trained_model()
    expected = reference_statistics(model, batches)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    model.train()
    rng = torch.get_rng_state()
    reestimate_batchnorm(model, iter(batches))
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn from the global generator
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())  # weights unchanged
    named = dict(model.named_modules())
    assert any(n.startswith("head.") for n in expected)  # the mixture's own layers are among them
    for name, (mean, var) in expected.items():
        # tolerance: float32 sums over a few thousand values against float64
        torch.testing.assert_close(named[name].running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(named[name].running_var.double(), var, rtol=1e-4, atol=1e-5)
    # and so the model evaluates as it does with the directly computed statistics
    direct = copy.deepcopy(model)
    for name, (mean, var) in expected.items():
        dict(direct.named_modules())[name].running_mean.copy_(mean)
        dict(direct.named_modules())[name].running_var.copy_(var)
    model.eval(), direct.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batches[0]), direct(batches[0]), rtol=1e-4, atol=1e-4)


def test_layers_held_fixed_or_never_reached_keep_their_statistics():
    model, _, batches = _trained_model()
    backbone_norm = next(m for m in model.backbone.modules() if isinstance(m, _BatchNorm))
    for p in backbone_norm.parameters():
        p.requires_grad_(False)  # held (a fine-tuning warm-up)
    unreached = nn.BatchNorm1d(3)
    unreached.running_mean.fill_(7.0)
    model.add_module("unused_norm", unreached)
    held = backbone_norm.running_mean.clone()
    reestimate_batchnorm(model, iter(batches))
    assert torch.equal(backbone_norm.running_mean, held)
    assert torch.all(unreached.running_mean == 7.0)


def _run(folder: Path, *overrides: str, callbacks=()):
    cfg = compose_train(
        *GMSOP,
        "data.image_size=16",
        "optim.lr=1.0",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.resume=auto",
        "trainer.test=false",
        "model.precise_bn_batches=3",
        f"runs_dir={folder / 'runs'}",
        *overrides,
    )
    return run_training(cfg, folder / "run", list(callbacks))


@pytest.mark.slow
def test_a_run_validates_and_saves_the_statistics_of_its_weights(tmp_path):
    """Through the real run: last.ckpt (written after the last validation) holds the statistics that
    the pass's batches give for its weights, and val/loss is the classification loss alone."""
    _run(tmp_path)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model = SecondOrderClassifier(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    _, datamodule, _ = build_run(compose_train(*GMSOP, "data.image_size=16", "seed=0"))
    datamodule.load_state_dict(ckpt[type(datamodule).__name__])  # (its shuffle seed)
    datamodule.setup("fit")
    expected = reference_statistics(model, list(datamodule.statistics_batches(3, epoch=ckpt["epoch"])))
    named = dict(model.named_modules())
    for name, (mean, var) in expected.items():
        torch.testing.assert_close(named[name].running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(named[name].running_var.double(), var, rtol=1e-4, atol=1e-5)
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(rows) == 2 and all(float(r["val/aux_loss"]) > 0 for r in rows)  # (logged apart)
    assert all(float(r["val/loss"]) == pytest.approx(float(r["val/ce"])) for r in rows)


class StopDuringThePass:
    """Patches the data module's statistics batches: after the pass's second batch at `epoch`,
    raise Killed (kill -9) or send this process SIGTERM."""

    def __init__(self, monkeypatch, epoch: int, how: str) -> None:
        original = ImageDataModule.statistics_batches
        state = {"done": False}

        def patched(dm, count, epoch_now, *args, **kwargs):
            for i, batch in enumerate(original(dm, count, epoch_now, *args, **kwargs)):
                yield batch
                if i == 1 and epoch_now == epoch and not state["done"]:
                    state["done"] = True
                    if how == "kill":
                        raise Killed
                    os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(ImageDataModule, "statistics_batches", patched)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["term", "kill"])
def test_a_stop_during_the_statistics_pass_resumes_exactly(tmp_path, monkeypatch, how):
    _run(tmp_path / "whole")
    StopDuringThePass(monkeypatch, epoch=0, how=how)
    with pytest.raises(Killed if how == "kill" else RunInterrupted):
        _run(tmp_path / "resumed")
    _run(tmp_path / "resumed")
    whole, resumed = (
        torch.load(tmp_path / d / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in ("whole", "resumed")
    )
    assert resumed["global_step"] == whole["global_step"] == 12
    for name, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert read_curves(tmp_path / "resumed" / "run") == read_curves(tmp_path / "whole" / "run")
