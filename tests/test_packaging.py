"""A normal install: the wheel carries the configs and experiments, and trains from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "docs", ".gpu", "weights")


def test_wheel_installs_with_its_configs_and_trains_one_batch(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=SKIP)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("gmsop-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    assert (site / "gmsop" / "conf" / "train.yaml").is_file()
    assert (site / "gmsop" / "conf" / "experiment" / "paper" / "imagenet64_resnet18_gmsop_16_8.yaml").is_file()
    work = tmp_path / "elsewhere"  # not the repository: only the installed package can be found
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("GMSOP_CONFIG_DIR", None)
    where = subprocess.run(
        [sys.executable, "-c", "import gmsop.paths as p; print(p.__file__); print(p.CONFIG_DIR)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(line.startswith(str(site)) for line in where), where
    run = work / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gmsop.train",
            "experiment=default",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false",
            "logger.wandb.enabled=false",
            f"hydra.run.dir={run}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    # the installed commands run the same entry point as python -m: tidy --help, checks before Hydra
    command = [sys.executable, str(site / "bin" / "gmsop-train")]
    helped = subprocess.run([*command, "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "head: " in helped.stdout and "_defaults" not in helped.stdout
    outside = {k: v for k, v in env.items() if k != "SLURM_JOB_ID"}
    slurm = subprocess.run(
        [*command, "trainer=slurm"], cwd=work, env=outside, capture_output=True, text=True, timeout=300
    )
    assert slurm.returncode == 2 and "$SLURM_JOB_ID, which is not set" in slurm.stderr
    # without the mlflow extra (its package made unimportable), logger=mlflow stops before the run
    # writes anything (Hydra makes the folder and its log), naming the extra to install
    without_mlflow = (
        "import runpy, sys; sys.modules['mlflow'] = None; "
        f"sys.argv = ['gmsop.train', 'logger=mlflow', 'hydra.run.dir={work / 'mlflow_run'}']; "
        "runpy.run_module('gmsop.train', run_name='__main__')"
    )
    missing = subprocess.run(
        [sys.executable, "-c", without_mlflow], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "install it with: pip install 'gmsop[mlflow]'" in missing.stderr
    assert {p.name for p in (work / "mlflow_run").iterdir()} <= {"train.log"}


def test_an_experiment_folder_of_ones_own_joins_with_config_dir(tmp_path):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "birds.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /head: gap\nname: my_birds\ntrainer: {max_epochs: 7}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "gmsop.train",
        "--config-dir",
        str(tmp_path / "mine"),
        "experiment=birds",
        "--cfg",
        "job",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "name: my_birds" in proc.stdout and "max_epochs: 7" in proc.stdout
