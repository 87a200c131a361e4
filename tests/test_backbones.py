"""The paper's 64x64 backbones are timm models; any timm CNN feeds a head as an NCHW map."""

from __future__ import annotations

import pytest
import timm
import torch

from gmsop.models import create_backbone
from gmsop.registry import ConfigError


@pytest.mark.parametrize("name,channels", [("resnet18_64", 128), ("wrn36_2_64", 256)])
def test_paper_backbones_map_sizes(name, channels):
    x = torch.randn(1, 3, 64, 64)
    second = create_backbone({"backbone": name}, 3, second_order=True)
    first = create_backbone({"backbone": name}, 3, second_order=False)
    assert second(x).shape == (1, channels, 16, 16)  # no last downsampling for second-order heads
    assert first(x).shape == (1, channels, 8, 8)
    assert second.num_features == channels


def test_paper_backbone_through_timm_create_model():
    m = timm.create_model("resnet18_64", num_classes=10)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    m.reset_classifier(0, "")
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 128, 8, 8)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet18_64", pretrained=True)


def test_any_timm_cnn_with_output_stride():
    bb = create_backbone({"backbone": "resnet18", "output_stride": 16}, 3, second_order=True)
    assert bb(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)
    bb = create_backbone({"backbone": "resnet18"}, 1, second_order=True)
    assert bb(torch.randn(1, 1, 64, 64)).shape == (1, 512, 2, 2)


def test_token_backbone_becomes_a_map():
    bb = create_backbone(
        {"backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"img_size": 32, "depth": 1}}, 3, second_order=True
    )
    assert bb(torch.randn(1, 3, 32, 32)).shape == (1, 192, 2, 2)


def test_backbone_errors():
    with pytest.raises(ConfigError, match="unknown backbone model.backbone='resnet_nope'"):
        create_backbone({"backbone": "resnet_nope"}, 3, True)
    with pytest.raises(ConfigError, match="pretrained_file"):
        create_backbone({"backbone": "resnet18", "pretrained": True}, 3, True)
    with pytest.raises(ConfigError, match="last_stride applies to"):
        create_backbone({"backbone": "resnet18", "last_stride": 1}, 3, True)
    with pytest.raises(ConfigError, match="features_only=true is not supported"):
        create_backbone({"backbone": "resnet18", "backbone_kwargs": {"features_only": True}}, 3, True)
    with pytest.raises(ConfigError, match="folder /no/such/model does not exist"):
        create_backbone({"backbone": "local-dir:/no/such/model"}, 3, True)


def test_full_timm_names_with_a_pretrained_tag_and_a_local_weights_file(tmp_path):
    """`resnet18.a1_in1k` is a name timm takes; its weights come from a local file (timm's own
    format, written here from a fresh model), never from the network."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=0, global_pool="")
    for p in source.parameters():
        p.data.normal_()
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    cfg = {"backbone": "resnet18.a1_in1k", "pretrained": True, "pretrained_file": str(tmp_path / "r18.safetensors")}
    bb = create_backbone(cfg, 3, second_order=False)
    assert torch.equal(bb.model.conv1.weight, source.conv1.weight)


def test_a_map_of_one_position_is_refused_by_second_order_heads():
    from gmsop.heads import build_head

    for name in ("sop", "isqrt", "mpncov", "parametric_isqrt"):
        with pytest.raises(ValueError, match=r"at least 2 positions, got 1: feed it a larger map"):
            build_head({"name": name}, 8)(torch.randn(2, 8, 1, 1))
    assert build_head({"name": "gap"}, 8)(torch.randn(2, 8, 1, 1)).features.shape == (2, 8)


def test_pretrained_timm_weights_get_their_own_normalisation_not_the_data_sets(tmp_path):
    """Through the run builder: a pretrained timm backbone sees inputs normalised with its weights'
    data config (ImageNet's mean/std for resnet18, averaged over RGB for one-channel digits); the same
    backbone from scratch, or one of this project's own backbones, uses the data set's statistics."""
    import timm
    from safetensors.torch import save_file

    from gmsop.run.build import build_run
    from gmsop.run.compose import compose_train

    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(tmp_path / "r18.safetensors"))
    timm_model = ["model=timm", "model.backbone=resnet18", "head=gap", "data.image_size=32"]
    pretrained = [f"model.pretrained_file={tmp_path / 'r18.safetensors'}", "model.pretrained=true"]
    _, data, model = build_run(compose_train([*timm_model, *pretrained]))
    data.setup()
    imagenet_mean, imagenet_std = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
    assert data.mean.flatten().tolist() == pytest.approx([imagenet_mean], abs=1e-6)
    assert data.std.flatten().tolist() == pytest.approx([imagenet_std], abs=1e-6)
    assert data.normalisation_source == "weights"
    # Its checkpoint still loads, and evaluates with the same normalisation, once the weights file
    # is gone (the checkpoint holds every weight; gmsop.eval used to need the file)
    import lightning

    from gmsop.models.classifier import SecondOrderClassifier
    from gmsop.run.evaluate import evaluate

    ckpt = tmp_path / "run.ckpt"
    torch.save(
        {
            "hyper_parameters": dict(model.hparams),
            "state_dict": model.state_dict(),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    (tmp_path / "r18.safetensors").unlink()
    loaded = SecondOrderClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert loaded.weights_normalisation() == model.weights_normalisation()
    assert 0.0 <= evaluate(ckpt, {"eval_batch_size": 256}, accelerator="cpu")[0]["test/top1_err"] <= 1.0
    for overrides in (timm_model, ["head=gap"]):  # from scratch; this project's resnet18_64
        _, data, model = build_run(compose_train(overrides))
        data.setup()
        assert model.weights_normalisation() is None and data.normalisation_source == "data"
        assert data.mean.flatten().tolist() != pytest.approx([imagenet_mean], abs=1e-3)


def test_a_backbone_that_wants_another_input_size_is_named_before_training(tmp_path):
    """A ViT built for 224 px on 32 px data: timm's assertion came once training had started."""
    from gmsop.registry import ConfigError
    from gmsop.run.build import build_run
    from tests.test_config import compose_train

    cfg = compose_train("model.backbone=vit_tiny_patch16_224", "head=gap", f"runs_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"does not take data.image_size=32 .*model.backbone_kwargs.img_size=32"):
        build_run(cfg)
