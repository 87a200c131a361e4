"""Pretrain, export the backbone, fine-tune another head from it (gmsop.export + model.pretrained_file)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from gmsop.config import OptimConfig
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.registry import ConfigError

SGD = asdict(OptimConfig())


def _checkpoint(tmp_path, in_chans=1):
    torch.manual_seed(0)
    model = SecondOrderClassifier({"backbone": "resnet18_64"}, {"name": "gap"}, SGD, 10, in_chans)
    for p in model.backbone.parameters():
        p.data.normal_()  # not an initialisation a fresh model could reproduce
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return model, path


def test_exported_backbone_initialises_a_model_with_another_head(tmp_path):
    source, ckpt = _checkpoint(tmp_path)
    out = tmp_path / "weights" / "backbone.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "gmsop.export", str(ckpt), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "model.backbone=resnet18_64 model.pretrained=true" in proc.stdout
    model = {"backbone": "resnet18_64", "pretrained": True, "pretrained_file": str(out)}
    target = SecondOrderClassifier(model, {"name": "isqrt"}, SGD, 7, 1)  # last stride 1 for second order: same weights
    for (name, a), b in zip(target.backbone.state_dict().items(), source.backbone.state_dict().values()):
        assert torch.equal(a, b), name


def test_weights_that_do_not_fit_or_do_not_exist_are_named(tmp_path):
    from gmsop.analysis.export import export_backbone

    _, ckpt = _checkpoint(tmp_path, in_chans=3)
    out = tmp_path / "rgb.safetensors"
    export_backbone(ckpt, out)
    model = {"backbone": "resnet18_64", "pretrained": True, "pretrained_file": str(out)}
    with pytest.raises(ConfigError, match=r"does not fit resnet18_64 .*stem.0.weight: \(16, 3, 3, 3\) in the file"):
        SecondOrderClassifier(model, {"name": "gap"}, SGD, 10, 1)
    with pytest.raises(ConfigError, match=r"model.pretrained_file=.*nope.safetensors does not exist"):
        SecondOrderClassifier(
            {**model, "pretrained_file": str(tmp_path / "nope.safetensors")}, {"name": "gap"}, SGD, 10, 3
        )
    proc = subprocess.run(
        [sys.executable, "-m", "gmsop.export", str(tmp_path / "missing.ckpt"), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "checkpoint" in proc.stderr and "does not exist" in proc.stderr
