"""Checkpoint reading, the resume plan and the compatibility check, on small in-process models."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gmsop.callbacks.checkpoints import BestCheckpoint
from gmsop.config import OptimConfig
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run.evaluate import evaluate
from gmsop.run.resume import ResumeError, check_compatible, plan_resume
from gmsop.run_folder import CheckpointError, RunFolderError, RunLock, read_checkpoint
from tests.conftest import run_cli
from tests.test_data import _image_tree

MODEL = {
    "backbone": "resnet18_64",
    "pretrained": False,
    "pretrained_file": None,
    "last_stride": None,
    "output_stride": None,
    "backbone_kwargs": {},
    "bn": True,
    "dropout": 0.0,
}
OPTIM = asdict(OptimConfig(scheduler="none"))  # the schema's defaults, but scheduler="none"


def _checkpoint(path: Path, resumable: bool = True, **hparams) -> dict:
    model = SecondOrderClassifier(
        **{
            "model": MODEL,
            "head": {"name": "gap"},
            "optim": OPTIM,
            "num_classes": 10,
            "in_chans": 1,
            "data": {"name": "digits", "image_size": 32},
            **hparams,
        }
    )
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "global_step": 3}
    if resumable:
        ckpt.update(loops={}, optimizer_states=[])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"epoch=3 val=0.1\n", "is not a readable PyTorch checkpoint"),
        (None, "is not a gmsop training checkpoint"),
    ],
)
def test_unreadable_checkpoints_are_named(tmp_path, content, message):
    path = tmp_path / "x.ckpt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)  # a plain torch file, not ours
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _checkpoint(path, resumable=False)
    with pytest.raises(CheckpointError, match="no training state"):
        plan_resume(str(path), tmp_path / "new", tmp_path)


def test_compatibility_names_every_changed_key_and_ignores_where_data_lives(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = _checkpoint(path)
    plan = plan_resume(str(tmp_path / "run"), tmp_path / "new", tmp_path)
    current = {
        **saved["hyper_parameters"],
        "head": {"name": "gmsop", "k": 4},
        "data": {"name": "digits", "image_size": 16, "num_workers": 8, "eval_batch_size": 100},
    }
    with pytest.raises(CheckpointError) as err:
        check_compatible(plan, current, allow_changes=False)
    assert "head.name: 'gap' in the checkpoint, 'gmsop' now" in str(err.value)  # another head: its options not listed
    assert "data.image_size: 32 in the checkpoint, 16 now" in str(err.value)
    assert "num_workers" not in str(err.value) and "eval_batch_size" not in str(err.value)
    assert len(check_compatible(plan, current, allow_changes=True)) == 2
    assert check_compatible(plan, saved["hyper_parameters"], allow_changes=False) == []
    # a default written out and one left out are the same setting (older checkpoints have fewer keys)
    written_out = {**saved["hyper_parameters"], "data": {"name": "digits", "image_size": 32, "val_fraction": 0.2}}
    assert check_compatible(plan, written_out, allow_changes=False) == []


def test_a_run_resumes_compiled_or_channels_last_and_from_checkpoints_without_those_keys(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = _checkpoint(path)
    plan = plan_resume(str(tmp_path / "run"), tmp_path / "new", tmp_path)
    model = saved["hyper_parameters"]["model"]
    faster = {**saved["hyper_parameters"], "model": {**model, "compile": "max-autotune", "channels_last": True}}
    assert check_compatible(plan, faster, allow_changes=False) == []
    older = {k: v for k, v in model.items() if k not in ("compile", "channels_last", "freeze_stages")}
    plan.checkpoint["hyper_parameters"]["model"] = older  # written before these keys existed
    assert check_compatible(plan, saved["hyper_parameters"], allow_changes=False) == []
    with pytest.raises(CheckpointError, match="model.dropout: 0.0 in the checkpoint, 0.5 now"):
        check_compatible(plan, {**saved["hyper_parameters"], "model": {**model, "dropout": 0.5}}, allow_changes=False)


def test_weights_that_do_not_fit_are_named_even_when_changes_are_allowed(tmp_path):
    from gmsop.run.resume import check_weights_fit

    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _checkpoint(path)
    plan = plan_resume(str(path), tmp_path / "new", tmp_path)
    wider = SecondOrderClassifier(MODEL, {"name": "gap"}, OPTIM, num_classes=12, in_chans=1)
    with pytest.raises(CheckpointError, match=r"classifier.2.weight: \(10, 128\) in the checkpoint, \(12, 128\) now"):
        check_weights_fit(plan, wider)
    check_weights_fit(plan, SecondOrderClassifier(MODEL, {"name": "gap"}, OPTIM, num_classes=10, in_chans=1))


def test_latest_skips_runs_in_use_and_a_fresh_run_refuses_a_used_folder(tmp_path):
    runs = tmp_path / "runs" / "exp"
    _checkpoint(runs / "old" / "checkpoints" / "last.ckpt")
    _checkpoint(runs / "busy" / "checkpoints" / "last.ckpt")  # newer, but a live process holds it
    with RunLock(runs / "busy", "train"):
        assert plan_resume("latest", runs / "new", runs).source == runs / "old"
        with pytest.raises(RunFolderError, match="in use by pid"):
            RunLock(runs / "busy", "train")
    assert plan_resume("latest", runs / "new", runs).source == runs / "busy"
    with pytest.raises(RunFolderError, match="already holds a run"):
        plan_resume(None, runs / "old", runs)
    with pytest.raises(ResumeError, match="no checkpoint at"):
        plan_resume(str(tmp_path / "missing"), runs / "new", runs)
    assert plan_resume("auto", runs / "new", runs).ckpt is None  # nothing there yet: a fresh start


@pytest.mark.parametrize("trace", ["wandb_run_id.txt", "csv/metrics.csv", ".hydra/config.yaml", ".run.lock"])
def test_a_folder_with_any_trace_of_a_run_is_refused_for_a_fresh_one(tmp_path, trace):
    """A run killed (kill -9) before its first checkpoint leaves its W&B id, CSV log, config or lock:
    a fresh run in that folder was accepted and the folder then held two W&B runs."""
    folder = tmp_path / "run"
    if trace == ".run.lock":
        RunLock(folder, "train a run in it").release()  # (a process that held it and died)
    else:
        (folder / trace).parent.mkdir(parents=True, exist_ok=True)
        (folder / trace).write_text("x")
    with RunLock(folder, "train a run in it") as lock, pytest.raises(RunFolderError, match="already holds a run"):
        plan_resume(None, folder, tmp_path / "runs", lock)


def test_a_run_stopped_by_bad_input_before_writing_leaves_no_trace(tmp_path):
    """The lock file of a process that refused its input is removed with it, so the folder stays fresh."""
    from gmsop.run.training import run_training
    from tests.test_config import compose_train

    folder = tmp_path / "run"
    cfg = compose_train(f"trainer.resume={tmp_path / 'missing'}", f"runs_dir={tmp_path / 'runs'}")
    with pytest.raises(ResumeError):
        run_training(cfg, folder)
    assert not (folder / ".run.lock").exists()
    with RunLock(folder, "train a run in it") as lock:
        assert plan_resume(None, folder, tmp_path / "runs", lock).ckpt is None


def test_best_checkpoint_is_carried_into_a_new_folder(tmp_path):
    old = tmp_path / "old" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"epoch 1 weights")
    earlier = BestCheckpoint(old)
    earlier.best_model_path, earlier.best_model_score = str(old / "best.ckpt"), torch.tensor(0.12)
    resumed = BestCheckpoint(tmp_path / "new" / "checkpoints")
    resumed.load_state_dict(earlier.state_dict())
    assert resumed.best_model_path == str(tmp_path / "new" / "checkpoints" / "best.ckpt")
    assert float(resumed.best_model_score) == pytest.approx(0.12)
    assert Path(resumed.best_model_path).read_bytes() == b"epoch 1 weights"
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda decision: decision))
    assert not resumed.check_monitor_top_k(trainer, torch.tensor(0.2))  # a worse epoch after the resume is not "best"
    assert resumed.check_monitor_top_k(trainer, torch.tensor(0.1))


def test_eval_refuses_data_the_model_was_not_trained_for(tmp_path):
    ckpt = tmp_path / "digits.ckpt"
    _checkpoint(ckpt)
    _image_tree(tmp_path / "pets", classes=("cat", "dog", "owl"), per_class=4)
    with pytest.raises(CheckpointError, match=r"trained for 10 classes, but data 'imagefolder' has 3"):
        evaluate(ckpt, {"name": "imagefolder", "root": str(tmp_path / "pets"), "num_workers": 0})


def test_an_unreadable_last_checkpoint_falls_back_to_the_newest_one_that_loads(tmp_path):
    """A damaged last.ckpt costs the epochs since the next readable checkpoint, not the run."""
    import os

    run = tmp_path / "run"
    _checkpoint(run / "checkpoints" / "best.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 half of a zip")  # newer than best.ckpt
    for resume, run_dir in (("auto", run), (str(run), tmp_path / "new")):
        with pytest.warns(
            UserWarning, match=rf"{last} is not a readable .* Continuing from {run}/checkpoints/best.ckpt"
        ):
            plan = plan_resume(resume, run_dir, tmp_path)
        assert plan.ckpt == run / "checkpoints" / "best.ckpt" and plan.in_place == (resume == "auto")
    hpc = run / "hpc_ckpt_3.ckpt"  # Lightning's SLURM save: resumable, so preferred to best.ckpt
    _checkpoint(hpc)
    os.utime(hpc, (1, 1))  # older than the damaged last.ckpt
    with pytest.warns(UserWarning, match=f"Continuing from {hpc}"):
        assert plan_resume("auto", run, tmp_path).ckpt == hpc
    with pytest.raises(CheckpointError, match=f"{last} is not a readable"):  # a file named by the user: no fallback
        plan_resume(str(last), tmp_path / "new", tmp_path)
    for ckpt in (hpc, run / "checkpoints" / "best.ckpt"):
        ckpt.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"no checkpoint in {run} can be resumed") as err:
        plan_resume("auto", run, tmp_path)
    assert all(f"{ckpt} is" in str(err.value) for ckpt in (last, hpc, run / "checkpoints" / "best.ckpt"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("trainer.max_epochs=0",), "trainer.max_epochs=0 trains nothing"),
        (("trainer.max_steps=0",), "trainer.max_steps=0 trains nothing"),
        (("trainer.max_epochs=-2",), "trainer.max_epochs=-2; allowed"),
        (
            ("optim=adamw_cosine", "trainer.max_epochs=-1", "trainer.max_steps=8"),
            "optim.scheduler=cosine anneals over trainer.max_epochs epochs, and trainer.max_epochs=-1",
        ),
    ],
)
def test_runs_without_a_length_are_refused_before_anything_is_written(tmp_path, overrides, message):
    from gmsop.registry import ConfigError
    from gmsop.run.training import run_training
    from tests.test_config import compose_train

    cfg = compose_train(*overrides, f"runs_dir={tmp_path / 'runs'}")
    with pytest.raises(ConfigError, match=message):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_cosine_run_resumed_for_another_length_is_refused_naming_the_key(tmp_path):
    """A 2-epoch cosine run resumed with trainer.max_epochs=4 trained at lr 0 in epoch 2 (T_max comes
    back from the checkpoint); it is refused, even with trainer.resume_allow_changes, and resumes at
    its own length."""
    from gmsop.run.training import run_training
    from tests.test_config import compose_train

    common = (
        "head=gap",
        "optim=adamw_cosine",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "logger=no_wandb",
        f"runs_dir={tmp_path / 'runs'}",
    )
    run_dir = tmp_path / "run"
    run_training(compose_train(*common, "trainer.max_epochs=2"), run_dir)
    for allow in ("false", "true"):
        longer = compose_train(
            *common, "trainer.max_epochs=4", f"trainer.resume={run_dir}", f"trainer.resume_allow_changes={allow}"
        )
        with pytest.raises(CheckpointError, match=r"with trainer.max_epochs=4: its cosine schedule .* over 2 epochs"):
            run_training(longer, tmp_path / f"longer_{allow}")
    same = run_training(compose_train(*common, "trainer.max_epochs=2", f"trainer.resume={run_dir}"), tmp_path / "same")
    assert same.metrics["val/top1_err"] >= 0


def test_checkpoints_from_before_lr_scaling_resume_as_the_fixed_rate_they_trained_at(tmp_path):
    """Before optim.lr became a base rate scaled to the batch, optim.lr was the rate: such a
    checkpoint resumes with optim.lr_scaling=none, and the error says so for the new default."""
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = _checkpoint(path)
    plan = plan_resume(str(tmp_path / "run"), tmp_path / "new", tmp_path)
    optim = saved["hyper_parameters"]["optim"]
    new_keys = ("lr_reference_batch", "lr_scaling", "warmup_epochs", "warmup_start_factor")
    plan.checkpoint["hyper_parameters"]["optim"] = {k: v for k, v in optim.items() if k not in new_keys}
    current = {**saved["hyper_parameters"], "optim": {**optim, "lr_scaling": "linear"}}
    with pytest.raises(CheckpointError, match="optim.lr_scaling: 'none' in the checkpoint, 'linear' now"):
        check_compatible(plan, current, allow_changes=False)
    fixed = {**saved["hyper_parameters"], "optim": {**optim, "lr_scaling": "none"}}
    assert check_compatible(plan, fixed, allow_changes=False) == []


def test_the_plan_is_made_once_by_rank_zero_and_launched_processes_take_it_whole(tmp_path, monkeypatch):
    from gmsop.run.resume import PLAN_ENV, open_plan
    from gmsop.run_folder import MLFLOW_ID_FILE, WANDB_ID_FILE, is_locked

    monkeypatch.delenv(PLAN_ENV, raising=False)
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    _checkpoint(old / "checkpoints" / "last.ckpt")
    (old / WANDB_ID_FILE).write_text("oldwandb")
    (old / MLFLOW_ID_FILE).write_text("oldmlflow")
    plan = open_plan(str(old), new, tmp_path / "runs", rank_zero=True)
    try:
        assert (plan.source, plan.step, plan.wandb_id, plan.mlflow_id, plan.in_place) == (
            old,
            3,
            "oldwandb",
            "oldmlflow",
            False,
        )
        assert is_locked(new) and is_locked(old)  # this run's folder, and the one it continues
        child = open_plan(str(old), new, tmp_path / "runs", rank_zero=False)  # as a launched DDP process
        assert (child.ckpt, child.source, child.step, child.wandb_id, child.mlflow_id, child.in_place) == (
            plan.ckpt,
            plan.source,
            plan.step,
            plan.wandb_id,
            plan.mlflow_id,
            plan.in_place,
        )
        assert child.locks == [] and child.checkpoint is None  # (rank 0's alone)
    finally:
        plan.release()
    assert not is_locked(new) and not is_locked(old)

    monkeypatch.delenv(PLAN_ENV)
    fresh = open_plan(None, tmp_path / "runs" / "fresh", tmp_path / "runs", rank_zero=True)
    fresh.release(forget=True)
    assert fresh.ckpt is None and len(fresh.wandb_id) == 8 and fresh.mlflow_id is None  # a new W&B run
    with pytest.raises(RunFolderError, match="already holds a run"):  # refused: its lock is released
        open_plan(None, old, tmp_path / "runs", rank_zero=True)
    assert not is_locked(old)


def test_a_lock_file_left_by_a_killed_run_stays_when_a_process_refuses_its_input(tmp_path):
    """Only the process that made .run.lock removes it: a process that stopped on bad input removed an
    (empty) lock file a killed run had left, and the folder then looked fresh."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".run.lock").touch()  # a run killed between making its lock file and writing its pid
    proc = run_cli(
        "gmsop.train", f"hydra.run.dir={folder}", f"trainer.resume={tmp_path / 'missing'}",
        f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (folder / ".run.lock").exists()
    with RunLock(folder, "train a run in it") as lock, pytest.raises(RunFolderError, match="already holds a run"):
        plan_resume(None, folder, tmp_path / "runs", lock)


def test_resume_naming_the_run_folder_it_writes_to_continues_in_place(tmp_path):
    """trainer.resume=DIR hydra.run.dir=DIR was refused with "To continue that run: trainer.resume=DIR",
    the value given."""
    run = tmp_path / "run"
    _checkpoint(run / "checkpoints" / "last.ckpt")
    for resume in (str(run), str(run / "checkpoints" / "last.ckpt")):
        with RunLock(run, "train a run in it") as lock:
            plan = plan_resume(resume, run, tmp_path / "runs", lock)
        assert plan.in_place and plan.ckpt == run / "checkpoints" / "last.ckpt"


def test_a_resume_is_refused_only_when_the_rate_it_trains_at_changes():
    from gmsop.run.resume import ResumePlan, check_rate_unchanged
    from gmsop.run_folder import RECORD_KEY

    def config(lr, batch, accumulate=None):
        trainer = {} if accumulate is None else {"accumulate_grad_batches": accumulate}
        return {"optim": {"lr": lr}, "data": {"name": "digits", "batch_size": batch}, "trainer": trainer}

    plan = ResumePlan(ckpt=Path("last.ckpt"), checkpoint={RECORD_KEY: {"config": config(0.1, 64)}, "global_step": 3})
    check_rate_unchanged(plan, config(0.05, 128))  # 0.05 x 128 / 256 = 0.1 x 64 / 256
    check_rate_unchanged(plan, config(0.1, 32, accumulate=2))  # the same global batch
    with pytest.raises(CheckpointError, match=r"data.batch_size=32 \(was 64\)"):
        check_rate_unchanged(plan, config(0.1, 32))
    check_rate_unchanged(ResumePlan(ckpt=Path("old.ckpt"), checkpoint={"global_step": 3}), config(0.1, 32))  # no record
