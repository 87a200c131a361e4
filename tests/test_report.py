"""gmsop.report on fabricated run folders (fast) and on a real 2-variant ablation (slow)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from scipy.stats import beta

from gmsop.analysis.published import PUBLISHED, match
from gmsop.analysis.report import NotComparable, collect, comparisons, configurations, report
from gmsop.models.predictions import PREDICTIONS_FILE, Predictions
from gmsop.models.usage import usage_entropy
from tests.conftest import run_cli
from tests.wandb_offline import history, logged_keys, records


def _fake_run(folder, name, head, data="imagenet64", backbone="resnet18_64", top1=0.4, overrides=(), curves=True):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "name": name,
                "head": head,
                "backbone": backbone,
                "data": data,
                "params": 10_300_000,
                "feature_dim": 8256,
                "epochs": 60,
                "metrics": {"val/top1_err": top1, "val/top5_err": top1 / 2, "train_images_per_s": 1234.0},
            }
        )
    )
    (folder / "csv").mkdir()
    if not curves:  # an old run's log: component usage only
        (folder / "csv" / "metrics.csv").write_text("epoch,usage/val/c00,usage/val/c01\n0,0.5,0.5\n1,0.9,0.1\n")
        return
    lines = [
        "epoch,lr-SGD/backbone,step,train/loss_epoch,train/top1_err,usage/val/c00,usage/val/c01,val/loss,val/top1_err,val/top5_err"
    ]
    for e, usage in ((0, "0.5,0.5"), (1, "0.9,0.1")):
        lines += [
            f",0.1,{e},,,,,,,",  # LearningRateMonitor's row, at the epoch's start
            f"{e},,{e + 1},{3 - e},{0.6 - 0.1 * e},{usage},{3.2 - e},{top1 + 0.1 * (1 - e)},{top1 / 2}",
        ]
    (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_published_rows_match_by_name_or_model():
    assert match("imagenet64_resnet18_gmsop_16_8", "imagenet64", "resnet18_64", {}).top1 == 38.48
    assert (
        match("ablation_heads", "imagenet64", "resnet18_64", {"name": "gmsop", "num_components": 16, "k": 8}).top5
        == 17.38
    )
    assert match("ablation_heads", "imagenet64", "resnet18_64", {"name": "gmsop", "num_components": 16, "k": 4}) is None
    assert match("x", "digits", "resnet18_64", {"name": "gap"}) is None
    assert len(PUBLISHED) == 12  # both tables, every row


def test_report_table_csv_and_plots(tmp_path):
    _fake_run(
        tmp_path / "m" / "0", "ablation_heads", {"name": "gap"}, top1=0.52, overrides=["head=gap", "experiment=x"]
    )
    _fake_run(
        tmp_path / "m" / "1",
        "ablation_heads",
        {"name": "gmsop", "num_components": 16, "k": 8},
        top1=0.385,
        overrides=["head=gmsop", "experiment=x"],
    )
    _fake_run(
        tmp_path / "m" / "2",
        "ablation_heads",
        {"name": "sop"},
        top1=0.45,
        overrides=["head=sop", "experiment=x"],
        curves=False,
    )  # a run whose log has no epoch values
    runs, skipped = collect(tmp_path)
    assert skipped == []
    assert [r.label for r in runs] == ["head=gap", "head=gmsop", "head=sop"]
    assert runs[1].usage == [0.9, 0.1]  # last epoch's validation usage
    assert runs[1].curves[1]["val/top1_err"] == 0.385 and runs[2].curves == {}
    out = report(tmp_path)
    md = (out / "report.md").read_text()
    # runs made before the test stage: no test error; the best epoch's val error (from the curves: this
    # summary.json predates "best"), marked as chosen on what is now the test split
    old = "test (before val hold-outs)"
    assert (
        "| head=gmsop | gmsop | 1 |  |  |  |  | 38.48 / 17.38 (GM-SOP-16-8 + ResNet-18) | 38.50 (1) | "
        f"{old} | 10.30 | 8256 | 1234 | 60 |" in md
    )
    assert f"| head=sop | sop | 1 |  |  |  |  |  |  | {old} |" in md  # no curves, no best
    assert f"| head=gmsop |  |  |  | 38.50 | 19.25 | 1 | 38.50 | {old} | m/1 |" in md  # the runs table
    assert f"| head=sop |  |  |  |  |  |  | 45.00 | {old} | m/2 |" in md  # only the last epoch is known
    assert "52.17 / 27.09" in md
    assert (out / "report.csv").read_text().count("\n") == 4 and (out / "runs.csv").read_text().count("\n") == 4
    assert (out / "errors.png").stat().st_size > 5000 and (out / "component_usage.png").stat().st_size > 5000
    assert "![loss and error per epoch](curves.png)" in md and (out / "curves.png").stat().st_size > 5000


def test_report_shows_the_best_epoch_not_the_last(tmp_path):
    _fake_run(tmp_path / "r", "abl", {"name": "gap"}, top1=0.40)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    best = {"epoch": 7, "val/top1_err": 0.3125, "val/top5_err": 0.125, "val/loss": 1.0}
    (tmp_path / "r" / "summary.json").write_text(json.dumps({**summary, "best": best}))
    md = (report(tmp_path) / "report.md").read_text()
    assert "| abl |  |  |  | 31.25 | 12.50 | 7 | 40.00 |" in md


def _tested_run(folder, head: str, seed: int, wrong: range, n: int = 100, name: str = "abl") -> None:
    """A finished run with a test stage: wrong on the test images in `wrong`, right on the others."""
    _fake_run(folder, name, {"name": head}, data="digits", overrides=[f"head={head}", f"seed={seed}"])
    labels = np.arange(n) % 10
    top5 = np.stack([(labels + k) % 10 for k in range(5)], 1)
    top5[list(wrong)] = np.roll(top5[list(wrong)], -1, axis=1)  # the true class second: a top-1 error
    predictions = Predictions(np.arange(n), labels, top5, np.full(n, 0.5, np.float32))
    predictions.save(folder / PREDICTIONS_FILE)
    summary = json.loads((folder / "summary.json").read_text())
    errors = predictions.errors()
    test = {"images": n, "metrics": {"test/top1_err": errors["top1_err"], "test/top5_err": errors["top5_err"]}}
    (folder / "summary.json").write_text(json.dumps({**summary, "seed": seed, "selected_on": "val", "test": test}))


def test_seeds_form_one_row_with_intervals_and_paired_tests_with_known_answers(tmp_path):
    """Two configurations x three seeds on 100 test images. A is wrong on the first 10, 12, 14 images
    (error 0.10, 0.12, 0.14), B on the first 20, 22, 24: B's errors contain A's, so per seed pair only
    A is right on 10 images (exact McNemar p = 2 * 0.5**10) and error A - B = -0.10 on every pair."""
    for seed in range(3):
        _tested_run(tmp_path / "a" / str(seed), "isqrt", seed, range(10 + 2 * seed))
        _tested_run(tmp_path / "b" / str(seed), "gap", seed, range(20 + 2 * seed))
    runs, _ = collect(tmp_path)
    configs = configurations(runs)
    assert [(c.label, [r.seed for r in c.runs]) for c in configs] == [
        ("head=isqrt", [0, 1, 2]),
        ("head=gap", [0, 1, 2]),
    ]
    a = configs[0].top1()
    # mean 0.12, sd 0.02, half width t(0.975, 2) * 0.02 / sqrt(3) with t(0.975, 2) = 4.302652729911275 (tables)
    assert (a.n, a.mean, a.sd) == (3, pytest.approx(0.12, abs=1e-12), pytest.approx(0.02, abs=1e-12))
    half = 4.302652729911275 * 0.02 / 3**0.5
    assert (a.low, a.high) == (pytest.approx(0.12 - half, abs=1e-9), pytest.approx(0.12 + half, abs=1e-9))
    (found,) = comparisons(configs)
    assert [(who, m.only_a_right, m.only_b_right) for who, m in found.mcnemar] == [
        ("seed 0", 10, 0),
        ("seed 1", 10, 0),
        ("seed 2", 10, 0),
    ]
    assert all(m.p_value == pytest.approx(2 * 0.5**10, rel=1e-12) for _, m in found.mcnemar)
    assert found.difference.estimate == pytest.approx(-0.10, abs=1e-12)
    assert (found.seeds.mean, found.seeds.low, found.seeds.high) == pytest.approx((-0.10, -0.10, -0.10), abs=1e-12)
    # per image, the seed-averaged difference (A wrong minus B wrong): -1 on images 14-19, -2/3 on 12-13
    # and 20-21, -1/3 on 10-11 and 22-23, else 0;
    # against a percentile bootstrap of it written out here (100,000 resamples): within 0.5 points
    # (the Monte Carlo error of 10,000 resamples at these quantiles is about 0.2 points)
    d = np.zeros(100)
    d[14:20], d[[12, 13, 20, 21]], d[[10, 11, 22, 23]] = -1, -2 / 3, -1 / 3
    means = d[np.random.default_rng(1).integers(0, 100, (100_000, 100))].mean(1)
    assert found.difference.low == pytest.approx(np.quantile(means, 0.025), abs=0.005)
    assert found.difference.high == pytest.approx(np.quantile(means, 0.975), abs=0.005)
    assert found.verdict == "head=isqrt lower"  # the image bootstrap and the seed-pair interval both exclude 0
    unsure = dataclasses.replace(found, seeds=found.seeds._replace(low=-0.2, high=0.05))
    assert unsure.verdict == "not resolved"  # seeds that disagree leave it open, whatever the images say
    out = report(tmp_path, compare_pairs=[("head=gap", "head=isqrt")])
    md = (out / "report.md").read_text()
    assert (
        f"| head=isqrt | isqrt | 3 | 12.00 | [{100 * (0.12 - half):.2f}, {100 * (0.12 + half):.2f}] (t) | 2.00 |" in md
    )
    rows = list(csv.DictReader((out / "comparisons.csv").open()))
    assert [(r["A"], r["B"], r["error A - B (pts)"], r["verdict"]) for r in rows] == [
        ("head=gap", "head=isqrt", "+10.00", "head=isqrt lower")  # the requested pair, once
    ]
    assert (out / "errors.png").stat().st_size > 5000
    with pytest.raises(NotComparable, match="no configuration 'head=sop'"):
        report(tmp_path, compare_pairs=[("head=sop", "head=gap")])


def test_a_single_run_shows_its_binomial_interval_and_unpaired_sets_are_not_compared(tmp_path):
    _tested_run(tmp_path / "a", "isqrt", 0, range(29), name="one")
    _tested_run(tmp_path / "b", "gap", 0, range(10), n=50, name="other")  # another test set (50 images)
    configs = configurations(collect(tmp_path)[0])
    one = next(c for c in configs if c.runs[0].summary["name"] == "one")
    low, high, kind = one.interval()
    # Clopper-Pearson for 29 of 100: the beta quantiles (independent of binomtest's own method)
    assert kind == "binomial" and low == pytest.approx(beta.ppf(0.025, 29, 72), abs=1e-9)
    assert high == pytest.approx(beta.ppf(0.975, 30, 71), abs=1e-9)
    assert comparisons(configs) == []


def test_runs_that_would_share_a_label_keep_their_own_rows_and_curves(tmp_path):
    # one head on two paper data sets (same overrides), and the same run twice
    _fake_run(tmp_path / "a", "imagenet64_resnet18_gap", {"name": "gap"}, overrides=["head=gap"])
    _fake_run(tmp_path / "b", "places365_resnet18_gap", {"name": "gap"}, data="imagefolder", overrides=["head=gap"])
    _fake_run(tmp_path / "c", "abl", {"name": "isqrt"}, data="digits", overrides=["head=isqrt"])
    _fake_run(tmp_path / "d", "abl", {"name": "isqrt"}, data="digits", overrides=["head=isqrt"])
    runs, _ = collect(tmp_path)
    labels = [r.label for r in runs]
    assert len(set(labels)) == 4, labels
    # runs of several experiments: each label starts with its experiment's name (before, a study of
    # one experiment per head labelled its heads by their learning rates alone)
    assert labels[:2] == ["imagenet64_resnet18_gap head=gap", "places365_resnet18_gap head=gap"]
    assert labels[2:] == ["abl head=isqrt [c]", "abl head=isqrt [d]"]
    assert [r.published.row if r.published else None for r in runs] == ["ResNet-18 (GAP)", "GAP (512-d)", None, None]


def test_published_numbers_only_beside_runs_on_that_data_set(tmp_path):
    assert match("imagenet64_resnet18_gmsop_16_8", "digits", "resnet18_64", {}) is None  # a paper config on digits
    assert match("places365_resnet18_sop", "imagefolder", "resnet18_64", {}).top1 == 49.99


def test_report_without_runs_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        collect(tmp_path)


def test_report_names_corrupt_and_unfinished_runs_and_keeps_the_rest(tmp_path, capsys):
    _fake_run(tmp_path / "ok", "abl", {"name": "gap"}, top1=0.5)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "summary.json").write_text('{"name": "abl", "metr')  # cut off mid-write by another tool
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)  # kill -9 after an epoch, before summary.json
    (tmp_path / "killed" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "killed_at_once" / "checkpoints").mkdir(parents=True)  # before any checkpoint: nothing to resume
    _fake_run(tmp_path / "stopped", "abl", {"name": "gap"}, top1=0.1)
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    (tmp_path / "stopped" / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    _fake_run(tmp_path / "extended", "abl", {"name": "gap"}, top1=0.3)  # finished, then continued elsewhere
    (tmp_path / "extended" / "continued_in.json").write_text(json.dumps({"run_dir": str(tmp_path / "ok")}))
    runs, skipped = collect(tmp_path)
    assert [r.folder.name for r in runs] == ["ok"]
    why = {k.folder.name: k.why for k in skipped}
    assert set(why) == {"corrupt", "killed", "stopped", "extended"}
    assert why["extended"] == f"continued in {tmp_path / 'ok'} (finished here)"  # one training, one row
    assert "unreadable summary.json (JSONDecodeError" in why["corrupt"] and why["stopped"].startswith("interrupted")
    assert "killed before it could write summary.json" in why["killed"]
    md = (report(tmp_path) / "report.md").read_text()
    assert "## Not included" in md and "`corrupt`: unreadable summary.json" in md
    assert "not included: " + str(tmp_path / "killed") in capsys.readouterr().err


@pytest.mark.slow
def test_two_variant_ablation_then_report_through_the_cli(cli, tmp_path):
    multirun = (
        "-m",
        "experiment=default",
        "name=abl",
        "head.num_components=4,8,1",  # the last job is bad input (K > N): it fails alone
        "head.k=2",
        "head.component_dims=[16,8]",
        "head.gate_dims=[16,8]",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    )
    proc = cli("gmsop.train", *multirun)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the grid ran to its end, then said what failed
    assert "1 job(s) failed on bad input:\n  #2 (" in proc.stderr and "got K=2, N=1" in proc.stderr
    assert "Traceback" not in proc.stderr
    runs = sorted((tmp_path / "runs" / "abl").glob("multirun_*/*/summary.json"))
    assert len(runs) == 2
    sweep_dir = runs[0].parents[1]
    rep = run_cli("gmsop.report", str(sweep_dir), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "| head.num_components=4 | gmsop | 1 |" in md and "| head.num_components=8 | gmsop | 1 |" in md
    assert "(binomial) |" in md and "| val |" in md  # each run's test error with its interval, chosen on val
    # both tested on digits' 360 test images: compared image by image (one seed pair)
    (pair,) = list(csv.DictReader((sweep_dir / "report" / "comparisons.csv").open()))
    assert (pair["A"], pair["B"], pair["seed pairs"]) == ("head.num_components=4", "head.num_components=8", "1")
    assert pair["verdict"] in (
        "not resolved",
        "head.num_components=4 lower (one seed pair: images only)",
        "head.num_components=8 lower (one seed pair: images only)",
    )
    assert (sweep_dir / "report" / "errors.png").is_file() and (sweep_dir / "report" / "component_usage.png").is_file()
    assert (sweep_dir / "report" / "curves.png").is_file()  # from each run's csv/metrics.csv
    assert all((run.parent / "plots" / "curves.png").is_file() for run in runs)
    assert (sweep_dir / "report" / "usage_over_epochs.png").is_file() and "| head.num_components=8 | 1 | 8 -> " in md
    # every run of the multirun has its own W&B run, named by what differs (not 0/1), with its plots as images
    wandb_files = [f for run in runs for f in run.parent.glob("wandb/offline-run-*/run-*.wandb")]
    assert len(wandb_files) == 2 and all("val/top1_err" in history(f) for f in wandb_files)
    names = [next(r.run.display_name for r in records(f) if r.WhichOneof("record_type") == "run") for f in wandb_files]
    assert [n.split(" head.k=")[0] for n in names] == ["abl head.num_components=4", "abl head.num_components=8"]
    assert all("plots/curves/filenames" in logged_keys(f) for f in wandb_files)
    assert all(list(f.parent.glob("files/media/images/plots/curves_*.png")) for f in wandb_files)
    # A multirun killed before its second job: the same command in the same folder with
    # trainer.resume=auto (README) leaves the finished job as it was and runs the missing one.
    import shutil

    shutil.rmtree(runs[1].parent)
    first = runs[0].read_text()
    again = cli("gmsop.train", *multirun, f"hydra.sweep.dir={sweep_dir}", "trainer.resume=auto")
    assert again.returncode == 2 and "#2 (" in again.stderr, again.stderr[-3000:]
    assert json.loads(runs[0].read_text())["global_step"] == json.loads(first)["global_step"]
    assert json.loads(runs[1].read_text())["status"] == "finished"


def test_usage_entropy_against_hand_computed_values():
    assert usage_entropy([0.5, 0.5, 0.5, 0.5]) == pytest.approx(1.0, abs=1e-12)  # even: ln 4 / ln 4
    assert usage_entropy([1.0, 0.0, 0.0, 0.0]) == 0.0  # one takes all
    # shares 1/2, 1/4, 1/4, 0: (ln 2 / 2 + 2 ln 4 / 4) / ln 4 = 1.5 ln 2 / (2 ln 2) = 0.75
    assert usage_entropy([0.4, 0.2, 0.2, 0.0]) == pytest.approx(0.75, abs=1e-12)


def test_report_follows_component_usage_over_epochs(tmp_path):
    """A gated run whose component 2 dies in epoch 1: the usage table and plot show it per epoch."""
    folder = tmp_path / "m" / "0"
    _fake_run(folder, "gate_study", {"name": "gmsop"}, overrides=["head.balance_weight=0"])
    _fake_run(tmp_path / "m" / "1", "gate_study", {"name": "gmsop"}, overrides=["head.balance_weight=100"])
    header = "epoch,step,train/loss," + ",".join(f"usage/train/c{i:02d}" for i in range(3))
    header += "," + ",".join(f"usage/val/c{i:02d}" for i in range(3))
    (folder / "csv" / "metrics.csv").write_text(
        f"{header}\n"
        "0,10,1.0,,,,,,\n"  # a step row: no usage
        "0,20,,0.5,0.25,0.25,,,\n"  # train epoch end
        "0,20,,,,,0.5,0.5,0.0\n"  # val epoch end
        "1,40,,0.75,0.25,0.0,,,\n"
        "1,40,,,,,1.0,0.0,0.0\n"
    )
    runs, _ = collect(tmp_path)
    assert runs[0].usage_history == {
        "train": {0: [0.5, 0.25, 0.25], 1: [0.75, 0.25, 0.0]},
        "val": {0: [0.5, 0.5, 0.0], 1: [1.0, 0.0, 0.0]},
    }
    assert runs[0].usage == [1.0, 0.0, 0.0]  # the last epoch's validation usage
    out = report(tmp_path)
    rows = {r[0]: r for r in csv.reader((out / "usage.csv").open())}
    dying = rows["head.balance_weight=0"]
    assert dying[1:4] == ["2", "3 -> 2 of 3", "2"]
    assert dying[4] == f"{usage_entropy([0.5, 0.25, 0.25]):.3f} -> {usage_entropy([0.75, 0.25, 0.0]):.3f}"
    assert dying[5] == "0.00" and dying[6] == "1 / 0.000"
    assert "head.balance_weight=100" not in rows  # its log has validation usage only (no training usage)
    assert (out / "usage_over_epochs.png").stat().st_size > 5000
    assert "## Component usage over training" in (out / "report.md").read_text()
