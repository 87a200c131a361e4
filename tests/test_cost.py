"""gmsop.cost: parameter breakdown, training FLOPs against a hand count, the paper rows' totals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch import nn

from gmsop.analysis.cost import experiment_cost, parameter_breakdown, training_flops_per_image
from gmsop.data import MissingDataError
from gmsop.run.compose import compose_train
from tests.conftest import REPO, run_cli


class _TwoLinear(nn.Module):
    """Stands in for the classifier: flatten -> Linear(4, 3) 'head' -> Linear(3, 5) classifier, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3, bias=False)
        self.classifier = nn.Linear(3, 5, bias=False)

    def compute_loss(self, x, labels):
        """The classifier's objective, as SecondOrderClassifier.compute_loss (cross-entropy is not a matmul FLOP)."""
        logits = self.classifier(self.head(x.flatten(1)))
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels))


def test_training_flops_match_a_hand_count():
    # Per image, 2 FLOPs per multiply-add. Head: forward 2*4*3 = 24, backward only the weight
    # gradient (images need none) 24. Classifier: forward 2*3*5 = 30, backward input and weight 60.
    assert training_flops_per_image(_TwoLinear(), channels=1, image_size=2, batch=3) == 24 + 24 + 30 + 60


def test_parameter_breakdown_splits_a_mixture_head():
    cost = experiment_cost(compose_train(["experiment=paper/imagenet64_resnet18_gmsop_16_8"]))
    model_parts = cost.params
    assert set(model_parts) == {"backbone", "head.gate", "head.components", "classifier"}
    assert model_parts["classifier"] == 2 * 8256 + 8256 * 1000 + 1000  # BN + linear to 1000 classes
    assert model_parts["head.components"] == 16 * (128 * 256 + 256 * 128)  # 1x1 convs 128->256->128, no bias
    assert cost.feature_map == (128, 16, 16) and cost.feature_dim == 8256


def test_breakdown_of_a_plain_module_uses_top_level_names():
    assert parameter_breakdown(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))) == {"0": 9, "1": 4}


def test_paper_row_totals_use_the_data_set_size_and_the_recipe():
    cost = experiment_cost(compose_train(["experiment=paper/imagenet64_wrn36_2_gmsop_16_8"]))
    assert cost.total_params == 17_809_144  # as pinned in test_paper_models
    assert (cost.epochs, cost.train_images) == (40, 1_281_167)
    assert cost.total_flop() == pytest.approx(cost.gflop_per_image * 1e9 * 1_281_167 * 40)
    assert cost.gpu_hours(50) == pytest.approx(cost.total_flop() / 50e12 / 3600)


def test_missing_data_asks_for_the_number_of_classes():
    with pytest.raises(MissingDataError, match="give --classes"):  # a library error, not an exit
        experiment_cost(compose_train(["experiment=default", "data=imagefolder", "data.root=/nonexistent"]))
    cost = experiment_cost(
        compose_train(["experiment=default", "data=imagefolder", "data.root=/nonexistent"]), classes=7, channels=1
    )
    assert cost.train_images is None and cost.total_flop() is None and cost.gpu_hours(50) is None


def test_markdown_table_puts_the_published_count_beside_ours():
    from gmsop.analysis.cost import markdown_table

    costs = [
        experiment_cost(compose_train([f"experiment=paper/{n}"]))
        for n in ("imagenet64_resnet18_gap", "places365_resnet18_gap")
    ]
    table = markdown_table(costs, tflops=50)
    assert "| imagenet64_resnet18_gap | 0.83 | 0.9 | 128x8x8 | 128 | 0.84 | 75 | 8.1e+16 | 0.4 |" in table
    assert "| places365_resnet18_gap | 11.36 |  | 512x4x4 | 512 |" in table  # no published count for Places365


def test_cli_prints_one_experiment_and_rejects_ambiguous_arguments(tmp_path):
    proc = run_cli("gmsop.cost", "experiment=paper/imagenet64_resnet18_srsop", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # backbone 700,176 + linear 8256*1000+1000 (no BN before the classifier: the release's baseline)
    assert (
        "imagenet64_resnet18_srsop: 8,957,176 parameters" in proc.stdout
        and "60 epochs x 1,281,167 images" in proc.stdout
    )
    proc = run_cli("gmsop.cost", cwd=tmp_path)
    assert proc.returncode == 2 and "give Hydra overrides" in proc.stderr


def test_measured_rates_give_gpu_hours_for_the_rows_they_measured(tmp_path):
    from gmsop.analysis.cost import markdown_table, measured_rates

    bench = tmp_path / "bench.json"
    bench.write_text(
        '{"env": {"gpu": "TestGPU"}, "batch": 256, "amp": true, "rows": ['
        '{"section": "d", "cfg": {"name": "gap"}, "images_per_s": 1281.167},'
        '{"section": "e", "cfg": {"name": "gap"}, "ms": 1.0}]}'
    )
    rates = measured_rates(bench)
    assert rates.rates == {"resnet18_64@64/gap": 1281.167} and rates.label == "TestGPU, B=256, AMP"
    costs = [experiment_cost(compose_train([f"experiment=paper/{n}"])) for n in ("imagenet64_resnet18_gap",)]
    # 75 epochs x 1,281,167 images at 1,281.167 images/s: 75,000 s = 20.8 h
    assert "| 0.4 | 20.8 (1281 img/s) |" in markdown_table(costs, 50, rates)


@pytest.mark.slow
def test_the_readme_cost_table_is_what_gmsop_cost_prints(tmp_path):
    """The README's table between its markers is `gmsop.cost --paper --throughput ...`'s output, so
    neither the code nor the README can drift from the other."""
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- gmsop.cost --paper: start -->\n", "<!-- gmsop.cost --paper: end -->"
    assert start in readme and end in readme
    committed = readme.split(start, 1)[1].split(end, 1)[0]
    bench = REPO / "docs" / "results" / "benchmarks" / "cuda_h200_b256.json"
    proc = run_cli("gmsop.cost", "--paper", "--throughput", str(bench), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert committed == proc.stdout
