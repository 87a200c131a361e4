"""Fault injection through the real entry points: kill -9, SIGTERM, SIGUSR1 under (simulated)
SLURM, two runs at once, reused folders, corrupt files. After each: the final epoch and step
are right, no file is half-written, one W&B run id per training, no temporary files left."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gmsop.run_folder import read_curves
from tests.conftest import logged_rows, run_cli, start_cli, tiny_lr_sweep
from tests.test_checkpoint_safety import damage_in_place

QUIET = ("trainer.enable_progress_bar=false",)
# A short run: digits, the paper's ResNet-18 with a GAP head, 8 steps per epoch.
SHORT = ("head=gap", "trainer.limit_train_batches=8", "trainer.limit_val_batches=2", *QUIET)
STEPS_PER_EPOCH = 8
CHECKPOINTS_WITH_DIGESTS = ["best.ckpt", "best.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"]


def _train(tmp_path, *args, env=None):
    return run_cli("gmsop.train", *args, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path, env=env)


def _start(tmp_path, *args, env=None, session=False):
    return start_cli("gmsop.train", *args, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path, env=env, session=session)


def wandb_service_version() -> str:
    from wandb.sdk.lib.service.service_token import _CURRENT_VERSION

    return _CURRENT_VERSION


def _ok(proc) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    )


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _wait_for(predicate, timeout: float = 120, what: str = "", job: subprocess.Popen | None = None) -> None:
    """Wait for predicate(); with `job`, fail at once, with its output, if it ends first."""
    end = time.monotonic() + timeout
    while not predicate():
        if job is not None and job.poll() is not None:
            raise AssertionError(f"the job ended (exit {job.returncode}) before {what}:\n{_output(job)[-5000:]}")
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout}s for {what}" + (f":\n{_output(job)[-5000:]}" if job else ""))
        time.sleep(0.05)


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def _assert_clean(run_dir: Path) -> None:
    """No temporary files; every checkpoint loads and is finite; one W&B run id in the folder."""
    assert not [p for p in run_dir.rglob(".*.tmp-*")], "temporary files left behind"
    for ckpt in run_dir.rglob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt
    run_id = (run_dir / "wandb_run_id.txt").read_text()
    assert {p.name.rsplit("-", 1)[1] for p in run_dir.glob("wandb/offline-run-*")} == {run_id}


@pytest.mark.slow
def test_last_checkpoint_every_epoch_and_a_used_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    args = (
        "head=gap",
        "optim.lr=0",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    )
    proc = _train(tmp_path, *args)
    _ok(proc)
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 6  # not 3: no improvement at lr=0, still saved
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == CHECKPOINTS_WITH_DIGESTS
    assert "ckpt_path=None" not in proc.stderr  # Lightning's "last checkpoint" warning on fresh runs is gone
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".run.lock" not in p.name}
    again = _train(tmp_path, *args)  # the same folder again, without resume
    assert again.returncode == 2 and "already holds a run" in again.stderr and "trainer.resume=" in again.stderr
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".run.lock" not in p.name}
    assert after.keys() - before.keys() <= {run_dir / "train.log"} and all(
        after[p] == before[p] for p in before if p.name != "train.log"
    )
    assert _summary(run_dir)["resumed_from"] is None


@pytest.mark.slow
def test_two_runs_with_one_name_started_together_get_their_own_folders(tmp_path):
    # with MLflow: both create its database (runs/mlflow.db) at once, which used to kill one of them
    procs = [_start(tmp_path, *SHORT, "name=twins", "trainer.max_epochs=1", "logger=mlflow") for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, _output(p)
    folders = sorted((tmp_path / "runs" / "twins").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert _summary(folder)["global_step"] == STEPS_PER_EPOCH
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == CHECKPOINTS_WITH_DIGESTS
        _assert_clean(folder)
    assert len({(f / "wandb_run_id.txt").read_text() for f in folders}) == 2
    assert len({(f / "mlflow_run_id.txt").read_text() for f in folders}) == 2
    # Same seed, same config: the same model and result (seeding covers the initial weights).
    assert _summary(folders[0])["metrics"]["val/top1_err"] == _summary(folders[1])["metrics"]["val/top1_err"]
    assert torch.equal(
        *(
            torch.load(f / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["classifier.2.weight"]
            for f in folders
        )
    )


@pytest.mark.slow
def test_sigterm_saves_exits_nonzero_and_resumes_in_place_while_others_are_kept_out(tmp_path):
    run_dir = tmp_path / "run"
    first = _start(tmp_path, *SHORT, "trainer.max_epochs=100", f"hydra.run.dir={run_dir}")  # stopped long before
    _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), what="the first checkpoint")
    # A second process can neither train into the folder nor continue the run while it is in use.
    intruders = [
        _start(tmp_path, *SHORT, f"hydra.run.dir={run_dir}", "trainer.resume=auto"),
        _start(tmp_path, *SHORT, f"trainer.resume={run_dir}"),
    ]
    for p in intruders:
        assert p.wait(timeout=120) == 2 and "is in use by pid" in _output(p)
    time.sleep(random.Random(0).uniform(0, 1.5))
    first.send_signal(signal.SIGTERM)  # how SLURM and Kubernetes preempt
    assert first.wait(timeout=120) == 143, _output(first)
    summary = _summary(run_dir)
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    assert _step(run_dir / "checkpoints" / "last.ckpt") == summary["global_step"] > 0  # saved where it stopped
    epochs = summary["epochs"] + 1  # finish the interrupted epoch
    proc = _train(tmp_path, *SHORT, f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}", "trainer.resume=auto")
    _ok(proc)
    # the data position is restored exactly (data/sampling.py), so Lightning's warning that the
    # dataloader cannot resume mid-epoch would be false
    assert "dataloader is not resumable" not in proc.stdout + proc.stderr
    summary = _summary(run_dir)
    assert (summary["status"], summary["epochs"], summary["global_step"]) == (
        "finished",
        epochs,
        epochs * STEPS_PER_EPOCH,
    )
    _assert_clean(run_dir)
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # two processes, one W&B run id


def _children(pid: int) -> list[int]:
    """The processes `pid` started (a training's loader processes)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# Stop signals as terminals and schedulers send them: to the whole process group, to the loader
# processes alone, or to the training process alone; (signal, "group" | "loaders" | "main", exit
# code, reason in summary.json)
STOP_SIGNALS_SENT = [
    (signal.SIGTERM, "group", 143, "SIGTERM"),  # scancel, preemption, kill -- -PGID
    (signal.SIGINT, "group", 130, "SIGINT"),  # Ctrl-C in a terminal: one press, though every process gets it
    (signal.SIGHUP, "group", 129, "SIGHUP"),  # a closed terminal or ssh session
    (signal.SIGUSR1, "loaders", 143, "SIGUSR1"),  # SLURM's --signal=USR1@90 outside SLURM's requeue
    (signal.SIGHUP, "main", 129, "SIGHUP"),
]


@pytest.mark.slow
def test_stop_signals_to_the_process_group_or_the_loader_processes_save_and_resume_exactly(tmp_path):
    """With 2 persistent loader processes and random flips, a run is stopped by each signal in turn
    (sent to every process of its group, to its loader processes alone, or to the training process
    alone), resumed after each, and
    ends with the CSV rows and weights of the run left alone. Before, the loader processes died
    first and the run failed with "DataLoader worker ... killed by signal", exit 1, nothing saved."""
    common = (
        "head=gap",
        "data.num_workers=2",
        "data.flip=true",
        "trainer.max_epochs=6",  # room for five stops: under load one stop can take a few steps
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "trainer.limit_val_batches=2",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.resume=auto",
        "logger=no_wandb",
        "+callbacks.pace._target_=tests.pace.Pace",
        "+callbacks.pace.seconds=0.25",  # few steps between a checkpoint seen and the stop, under load too
        *QUIET,
    )
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    full, cut = tmp_path / "full", tmp_path / "cut"
    _ok(_train(tmp_path, *common, f"hydra.run.dir={full}", env=env))
    last, stopped_at = cut / "checkpoints" / "last.ckpt", 0
    for sig, where, code, reason in STOP_SIGNALS_SENT:
        job = _start(tmp_path, *common, f"hydra.run.dir={cut}", env=env, session=True)
        _wait_for(
            lambda at=stopped_at: last.is_file() and _step(last) > at, what=f"a checkpoint before {sig.name}", job=job
        )
        if where == "group":
            os.killpg(job.pid, sig)
        elif where == "main":
            job.send_signal(sig)
        else:
            loaders = _children(job.pid)
            assert len(loaders) >= 2, loaders
            for pid in loaders:
                os.kill(pid, sig)
        assert job.wait(timeout=120) == code, f"{sig.name} to the {where}:\n{_output(job)}"
        summary = _summary(cut)
        assert summary["status"] == "interrupted" and summary["interrupted_by"] == reason, summary
        assert _step(last) == summary["global_step"] > stopped_at  # saved where it stopped
        assert "killed by signal" not in _output(job)
        stopped_at = summary["global_step"]
    assert stopped_at < 6 * STEPS_PER_EPOCH
    _ok(_train(tmp_path, *common, f"hydra.run.dir={cut}", env=env))
    assert _summary(cut)["status"] == "finished" and _summary(cut)["global_step"] == 6 * STEPS_PER_EPOCH
    assert logged_rows(cut) == logged_rows(full)
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for d in (full, cut)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _rank_of(pid: int) -> int | None:
    """The DDP rank a process was started as (Lightning's LOCAL_RANK; None for rank 0 and loader processes)."""
    env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    return int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env and env["LOCAL_RANK"] != "0" else None


@pytest.mark.slow
def test_ddp_stop_signals_to_every_process_or_one_ranks_loaders_then_resume_equals_the_uninterrupted_run(tmp_path):
    """Two DDP processes on the CPU, each with 2 loader processes: Ctrl-C to the whole process group
    (every rank and loader process gets SIGINT, as from a terminal) in epoch 0, then SIGTERM to
    rank 1's loader processes alone in epoch 1, resumed after each: the same CSV log, epoch means
    included (EpochSums sums them over the processes), and the same weights as the run that was
    not interrupted. Every process stops at the same batch whichever was signalled (rank 1's
    request reaches rank 0 through the all-reduce at each decision point)."""
    common = (
        "head=gap",
        "data.num_workers=2",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.enable_model_summary=false",
        "trainer.resume=auto",
        "logger=no_wandb",
        "+callbacks.pace._target_=tests.pace.Pace",
        "+callbacks.pace.seconds=0.1",
        *QUIET,
    )
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    full, cut = tmp_path / "full", tmp_path / "cut"
    _ok(_train(tmp_path, *common, f"hydra.run.dir={full}", env=env))
    last = cut / "checkpoints" / "last.ckpt"

    job = _start(tmp_path, *common, f"hydra.run.dir={cut}", env=env, session=True)
    _wait_for(lambda: last.is_file() and _step(last) >= 2, what="a step checkpoint in epoch 0", job=job)
    os.killpg(job.pid, signal.SIGINT)
    assert job.wait(timeout=120) == 130, _output(job)
    stopped = _summary(cut)
    assert stopped["status"] == "interrupted" and stopped["interrupted_by"] == "SIGINT"
    assert 2 <= stopped["global_step"] < 10 and _step(last) == stopped["global_step"], stopped

    job = _start(tmp_path, *common, f"hydra.run.dir={cut}", env=env, session=True)
    _wait_for(lambda: last.is_file() and _step(last) >= 12, what="a step checkpoint in epoch 1", job=job)
    (rank_1,) = [pid for pid in _children(job.pid) if _rank_of(pid) == 1]
    loaders = _children(rank_1)
    assert len(loaders) >= 2, loaders
    for pid in loaders:
        os.kill(pid, signal.SIGTERM)
    assert job.wait(timeout=120) == 143, _output(job)
    stopped = _summary(cut)
    assert stopped["status"] == "interrupted" and stopped["interrupted_by"] == "SIGTERM"
    assert 12 <= stopped["global_step"] < 20 and _step(last) == stopped["global_step"], stopped
    assert "killed by signal" not in _output(job)

    _ok(_train(tmp_path, *common, f"hydra.run.dir={cut}", env=env))
    assert _summary(cut)["status"] == "finished" and _summary(cut)["global_step"] == 20
    assert logged_rows(cut) == logged_rows(full)
    weights = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for d in (full, cut)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_no_finished_step(tmp_path):
    """kill -9 three times at random moments after a new checkpoint (saved every step), resume
    each time; the run ends at the right epoch and step with the weights of an uninterrupted run,
    bit for bit. (Kills inside a write: the test after this one; exact points and SIGTERM:
    tests/test_exact_resume.py.)"""
    run_dir = tmp_path / "run"
    args = (
        *SHORT,
        "trainer.max_epochs=3",
        f"hydra.run.dir={run_dir}",
        "trainer.resume=auto",
        "trainer.checkpoint_every_n_steps=1",
    )
    rng = random.Random(9)
    last = run_dir / "checkpoints" / "last.ckpt"
    steps = []
    # A W&B service inherited from a parent process (here: a dead one) is not used: in a shared
    # service a killed run's stream stays open and its resume failed with "run ID ... is in use".
    env = {"WANDB_SERVICE": f"{wandb_service_version()}-1-unix-{tmp_path / 'no-such.sock'}"}
    for _ in range(3):
        proc = _start(tmp_path, *args, env=env)
        before = _step(last) if last.is_file() else -1
        _wait_for(
            lambda before=before, proc=proc: proc.poll() is not None or (last.is_file() and _step(last) > before),
            what="a new checkpoint",
        )
        assert proc.poll() is None, f"the run ended before it was killed:\n{_output(proc)}"
        time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.wait()
        steps.append(_step(last))  # loads: never half-written
    assert steps == sorted(steps) and steps[0] < steps[-1] < 3 * STEPS_PER_EPOCH  # each resume continued
    _ok(_train(tmp_path, *args, env=env))
    summary = _summary(run_dir)
    assert (summary["status"], summary["epochs"], summary["global_step"]) == ("finished", 3, 3 * STEPS_PER_EPOCH)
    _assert_clean(run_dir)
    _ok(_train(tmp_path, *args[:-3], f"hydra.run.dir={tmp_path / 'uninterrupted'}"))
    resumed, uninterrupted = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (run_dir, tmp_path / "uninterrupted")
    )
    assert resumed["global_step"] == uninterrupted["global_step"] == 3 * STEPS_PER_EPOCH
    for name, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert logged_rows(run_dir) == logged_rows(tmp_path / "uninterrupted")  # the CSV log: each row once, none lost


def test_kill_9_in_the_middle_of_a_checkpoint_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"old complete checkpoint")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import time
from pathlib import Path
from gmsop.paths import replace_atomically
def slow(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half of a new chec")
        f.flush()
        Path({str(tmp_path / "writing")!r}).touch()
        time.sleep(60)
replace_atomically(Path({str(target)!r}), slow)
""",
        ]
    )
    _wait_for(lambda: (tmp_path / "writing").exists(), what="the write to start")
    writer.kill()
    writer.wait()
    assert target.read_bytes() == b"old complete checkpoint"
    (leftover,) = target.parent.glob(".last.ckpt.tmp-*")  # what a killed writer leaves
    from gmsop.run_folder import RunLock

    with RunLock(tmp_path, "test"):  # the next process to take the folder removes it
        assert not leftover.exists()


@pytest.mark.slow
def test_resume_into_a_new_folder_keeps_the_best_and_refuses_a_changed_config(tmp_path):
    common = ("head=gap", "optim.lr=0.02", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", *QUIET)
    common = (*common, "logger.mlflow.enabled=true")
    experiment_runs = tmp_path / "runs" / "default"  # where trainer.resume=latest looks
    first, second, third = (experiment_runs / n for n in ("first", "second", "third"))
    _ok(_train(tmp_path, *common, "trainer.max_epochs=2", f"hydra.run.dir={first}"))
    changed = _train(
        tmp_path,
        *common,
        "head=isqrt",
        "optim.lr=0.05",
        "trainer.max_epochs=3",
        f"trainer.resume={first}",
        f"hydra.run.dir={third}",
    )
    assert changed.returncode == 2
    assert "head.name: 'gap' in the checkpoint, 'isqrt' now" in changed.stderr and "optim.lr: 0.02" in changed.stderr
    assert not (third / "wandb").exists() and not (third / "checkpoints").exists()  # refused before writing
    resumed = _train(tmp_path, *common, "trainer.max_epochs=4", f"trainer.resume={first}", f"hydra.run.dir={second}")
    _ok(resumed)
    assert "Restored all states" in resumed.stdout + resumed.stderr
    summary = _summary(second)
    assert (summary["epochs"], summary["global_step"]) == (4, 12)  # two more epochs, not four
    assert summary["resumed_from"].endswith("first/checkpoints/last.ckpt")
    # the learning curves continue: epochs 0-1 as the first run recorded them, then 2-3
    before, curves = read_curves(first), read_curves(second)
    assert sorted(curves) == [0, 1, 2, 3] and (curves[0], curves[1]) == (before[0], before[1])
    val = [curves[e]["val/top1_err"] for e in sorted(curves)]
    best = second / "checkpoints" / "best.ckpt"
    assert summary["best_checkpoint"] == str(best) and summary["best_score"] == pytest.approx(min(val))
    assert _step(best) == 3 * (1 + val.index(min(val)))  # the best epoch of the whole run, wherever it was
    assert (first / "wandb_run_id.txt").read_text() == (second / "wandb_run_id.txt").read_text()
    allowed = _train(
        tmp_path,
        *common,
        "optim.weight_decay=0.001",
        "trainer.max_epochs=5",
        "trainer.resume=latest",  # the newest run of the experiment with a last.ckpt: second (step 12)
        "trainer.resume_allow_changes=true",
        f"hydra.run.dir={third}",
    )
    _ok(allowed)
    assert "optim.weight_decay" in allowed.stderr and _summary(third)["global_step"] == 15
    # resuming the finished run `second` trains nothing and reports its last epoch (it printed
    # "nan / nan"); `second` was already continued (in third), so this is a fork: its own W&B run
    again = _train(tmp_path, *common, "trainer.max_epochs=4", f"trainer.resume={second}", "hydra.run.dir=x")
    _ok(again)
    last_err = _summary(second)["metrics"]["val/top1_err"]
    assert _summary(tmp_path / "x")["metrics"]["val/top1_err"] == pytest.approx(last_err) and "nan" not in again.stdout
    assert f"{second} was already continued in {third}" in again.stderr
    assert (tmp_path / "x" / "wandb_run_id.txt").read_text() != (second / "wandb_run_id.txt").read_text()
    # MLflow: each part of the training is its own MLflow run (MLflow refuses changed parameter
    # values within one run), tagged with the run it continues
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    ids = [(f / "mlflow_run_id.txt").read_text().strip() for f in (first, second, third)]
    assert len(set(ids)) == 3
    tags = [client.get_run(i).data.tags.get("resumed_from_mlflow_run") for i in ids]
    assert tags == [None, ids[0], ids[1]]
    assert client.get_run(ids[2]).data.params["optim/weight_decay"] == "0.001"


@pytest.mark.slow
def test_non_finite_loss_stops_without_a_nan_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = _train(
        tmp_path,
        "head=isqrt",
        "optim.lr=1e12",
        "trainer.max_epochs=3",
        "trainer.limit_val_batches=2",
        f"hydra.run.dir={run_dir}",
        *QUIET,
    )
    assert proc.returncode != 0 and "non-finite training loss" in proc.stderr and "head 'isqrt'" in proc.stderr
    assert _summary(run_dir)["status"] == "failed"
    assert not (run_dir / "checkpoints" / "on_exception.ckpt").exists()
    _assert_clean(run_dir)  # whatever checkpoints exist hold finite weights


@pytest.mark.slow
def test_sigusr1_under_slurm_requeues_and_the_requeued_job_continues(tmp_path):
    """Simulated SLURM job 4242 with 2 loader processes: SLURM's SIGUSR1 reaches every process of the
    job; Lightning saves hpc_ckpt_1.ckpt and calls `scontrol requeue` once (each loader process
    passes the signal on); SLURM's SIGTERM to every process stops the job (143); the requeued job
    (same id, same command) resumes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    import os

    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "gmsop",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    args = (*SHORT, "data.num_workers=2", "name=cluster", "trainer=slurm", "trainer.max_epochs=100")
    run_dir = tmp_path / "runs" / "cluster" / "slurm_4242"
    # 1 s a step: the next epoch's last.ckpt, which deletes the superseded hpc_ckpt_1.ckpt (as it
    # should), is then 8 s or more after the signal; on a fast machine it came within the checks' 3 s
    paced = ("+callbacks.pace._target_=tests.pace.Pace", "+callbacks.pace.seconds=1.0")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    job = _start(tmp_path, *args, *paced, env=env, session=True)
    _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), what="the first checkpoint")
    os.killpg(job.pid, signal.SIGUSR1)
    _wait_for(lambda: (tmp_path / "scontrol.calls").is_file(), what="the requeue")
    time.sleep(3)  # time for the loader processes' copies of the signal to arrive
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    assert [p.name for p in run_dir.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]
    os.killpg(job.pid, signal.SIGTERM)
    assert job.wait(timeout=120) == 143, _output(job)
    assert "killed by signal" not in _output(job)
    args = (*args[:-1], f"trainer.max_epochs={_summary(run_dir)['epochs'] + 2}")
    requeued = _train(tmp_path, *args, env=env)
    _ok(requeued)
    summary = _summary(run_dir)
    epochs = int(args[-1].split("=")[1])
    assert (summary["epochs"], summary["global_step"]) == (epochs, epochs * STEPS_PER_EPOCH)
    assert [p.name for p in (tmp_path / "runs" / "cluster").iterdir()] == ["slurm_4242"]
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # superseded by later last.ckpt saves: deleted
    _assert_clean(run_dir)


@pytest.mark.slow
def test_bad_names_and_values_fail_before_any_folder_is_made(tmp_path):
    proc = _train(tmp_path, "name=", *QUIET)
    assert proc.returncode != 0 and "name=''" in proc.stderr
    proc = _train(tmp_path, "optim.lr=-0.1", *QUIET)
    assert proc.returncode == 2 and "optim.lr=-0.1; allowed: >= 0" in proc.stderr
    # values a constructor refuses (K > N; a nested head's option): the key path, no traceback
    proc = _train(tmp_path, "head=gmsop", "head.num_components=4", "head.k=8", *QUIET)
    assert proc.returncode == 2 and "head: K must satisfy 1 <= K <= N; got K=8, N=4 (head 'gmsop')" in proc.stderr
    proc = _train(
        tmp_path, "head=mixture", "head.component_pooling.name=isqrt", "+head.component_pooling.iterations=0", *QUIET
    )
    assert proc.returncode == 2 and "head.component_pooling: iterations must be >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    if "SLURM_JOB_ID" not in os.environ:  # trainer=slurm outside a SLURM job: a message, not a traceback
        proc = _train(tmp_path, "trainer=slurm", *QUIET)
        assert proc.returncode == 2 and "$SLURM_JOB_ID, which is not set" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not any(p.is_dir() for p in (tmp_path / "runs").glob("*/*/checkpoints"))
    assert (
        not (tmp_path / "runs").exists()
        or not any((tmp_path / "runs").iterdir())
        or all(not any(f.glob("*.ckpt")) for f in (tmp_path / "runs").rglob("checkpoints"))
    )


@pytest.mark.slow
def test_corrupt_checkpoints_are_named_by_resume_and_eval(tmp_path):
    """A finished 2-epoch run's last.ckpt damaged in place (same size: the digest, not the file's
    format, tells): gmsop.eval and gmsop.export refuse it by name; continued to 3 epochs, the run names
    it, goes on from the newest intact checkpoint (best.ckpt) and ends with the weights of a run that
    trained 3 epochs untouched."""
    run, untouched = tmp_path / "run", tmp_path / "untouched"
    _ok(_train(tmp_path, *SHORT, "trainer.max_epochs=2", f"hydra.run.dir={run}"))
    _ok(_train(tmp_path, *SHORT, "trainer.max_epochs=3", f"hydra.run.dir={untouched}"))
    last = run / "checkpoints" / "last.ckpt"
    damage_in_place(last)  # damaged on disk after the run
    for module, *args in (("gmsop.eval", f"ckpt_path={last}"), ("gmsop.export", str(last), str(tmp_path / "b.st"))):
        proc = run_cli(module, *args, cwd=tmp_path)
        assert proc.returncode == 2 and f"{last} is damaged" in proc.stderr, (module, proc.stderr[-3000:])
    resumed = _train(tmp_path, *SHORT, "trainer.max_epochs=3", "trainer.resume=auto", f"hydra.run.dir={run}")
    _ok(resumed)  # continues from best.ckpt (a full checkpoint of its epoch), saying what it skipped
    assert f"{last} is damaged" in resumed.stderr and "Continuing from" in resumed.stderr
    summary = _summary(run)
    assert summary["resumed_from"] == str(run / "checkpoints" / "best.ckpt") and summary["global_step"] == 24
    assert sorted(read_curves(run)) == [0, 1, 2]
    ends = [torch.load(f / "checkpoints" / "last.ckpt", weights_only=True) for f in (run, untouched)]
    for name, value in ends[1]["state_dict"].items():
        assert torch.equal(ends[0]["state_dict"][name], value), name
    bad = tmp_path / "bad"
    (bad / "checkpoints").mkdir(parents=True)
    (bad / "checkpoints" / "last.ckpt").write_text("this is not a checkpoint")
    proc = _train(tmp_path, *SHORT, f"trainer.resume={bad}")
    assert (
        proc.returncode == 2
        and f"{bad / 'checkpoints' / 'last.ckpt'} is not a readable PyTorch checkpoint" in proc.stderr
    )
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    proc = run_cli("gmsop.eval", f"ckpt_path={empty}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert proc.returncode == 2 and f"checkpoint {empty} is empty (0 bytes)" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_without_stale_or_repeated_trials(tmp_path):
    import sqlite3

    sweep, common = tiny_lr_sweep(tmp_path, "tiny", "head=gap")
    common = [*(a for a in common if not a.startswith("trainer.limit_train_batches")), "trainer.limit_train_batches=8"]
    root = tmp_path / "runs" / "tiny"
    sweeper = start_cli(
        "gmsop.sweep", str(sweep), "--trials", "3", *common, "trainer.checkpoint_every_n_steps=1", cwd=tmp_path
    )
    _wait_for(lambda: any(root.glob("trial_0001_*/checkpoints/last.ckpt")), what="trial 1's first checkpoint")
    sweeper.kill()  # kill -9 in the middle of trial 1, after it saved a step
    sweeper.wait()
    killed_at = _step(next(root.glob("trial_0001_*/checkpoints/last.ckpt")))
    assert 0 < killed_at < 8
    # resumed by two workers at once (same command and seed, as a job array would start them)
    workers = [start_cli("gmsop.sweep", str(sweep), "--trials", "3", *common, cwd=tmp_path) for _ in range(2)]
    outputs = []
    for worker in workers:
        assert worker.wait(timeout=300) == 0, _output(worker)
        outputs.append(_output(worker))
    assert sum("trial(s) 1 were killed while running; marked FAIL" in out for out in outputs) == 1
    assert sum("trial(s) 1 will continue from their checkpoints" in out for out in outputs) == 1
    with sqlite3.connect(root / "optuna.db") as db:
        states = dict(db.execute("select number, state from trials").fetchall())
        lrs = dict(db.execute("select number, param_value from trials join trial_params using (trial_id)").fetchall())
    finished = sorted(n for n, state in states.items() if state in ("COMPLETE", "PRUNED"))
    # each worker stops once the study holds 3 finished trials; one still running then finishes
    assert states[1] == "FAIL" and finished in ([0, 2, 3], [0, 2, 3, 4]) and len(states) == len(finished) + 1
    # trial 2 is trial 1 continued: its parameters, from its checkpoint (no step trained twice)
    continued = json.loads(next(root.glob("trial_0002_*/summary.json")).read_text())
    assert lrs[2] == lrs[1] and Path(continued["resumed_from"]).parts[-3].startswith("trial_0001_")
    assert len(set(lrs.values())) == len(lrs) - 1  # otherwise no parameter set drawn twice, by either worker
    folders = sorted(p.name for p in root.glob("trial_*"))
    assert len(folders) == len(states) and len({f.split("_")[2] for f in folders}) == 1  # one study, one suffix
    # the resumed sweep's records: each score is its run's best epoch, one W&B run per trial, the
    # trials table and plots, and a report of the finished trials
    assert all("1 trials finished, running 2 more" in out for out in outputs)
    summaries = {int(p.parent.name[6:10]): json.loads(p.read_text()) for p in root.glob("trial_*/summary.json")}
    assert sorted(summaries) == finished and all(s["epochs"] == 1 for s in summaries.values())
    with sqlite3.connect(root / "optuna.db") as db:
        values = dict(db.execute("select number, value from trials join trial_values using (trial_id)").fetchall())
    assert values == pytest.approx({n: s["best"]["val/top1_err"] for n, s in summaries.items()})
    assert all(len(list(root.glob(f"trial_{n:04d}_*/wandb/offline-run-*"))) == 1 for n in summaries)
    assert (root / "trials.csv").read_text().splitlines()[0] == "trial,state,val/top1_err,optim.lr,run_dir"
    assert (root / "sweep_history.png").is_file() and (root / "sweep_params.png").is_file()
    rep = run_cli("gmsop.report", str(root), cwd=tmp_path)
    assert rep.returncode == 0 and (root / "report" / "report.md").read_text().count("| gap |") == len(finished)
    # A deleted study starts over in new folders; the old trial 0 is left as it was.
    old_trial0 = next(root.glob("trial_0000_*"))
    old_summary = (old_trial0 / "summary.json").read_text()
    (root / "optuna.db").unlink()
    _ok(run_cli("gmsop.sweep", str(sweep), "--trials", "1", *common, cwd=tmp_path))
    assert len(list(root.glob("trial_0000_*"))) == 2 and (old_trial0 / "summary.json").read_text() == old_summary


@pytest.mark.slow
@pytest.mark.parametrize("method,sig,code", [("grid", signal.SIGTERM, 143), ("random", signal.SIGINT, 130)])
def test_sweep_stopped_by_a_group_signal_continues_its_trial_and_runs_no_point_twice(tmp_path, method, sig, code):
    """A sweep with 2 loader processes per trial, its whole process group signalled during trial 1:
    the trial saves and is INTERRUPTED in trials.csv; the re-run continues it from its checkpoint
    with its parameters (the loader processes died first and the trial FAILed unsaved, so the re-run
    drew new parameters; a grid's continuation then crashed in Optuna with KeyError 'grid_id'), every
    point runs once, and a finished grid re-run with more trials trains nothing."""
    import csv

    values = (
        "{values: [0.01, 0.02, 0.03]}"
        if method == "grid"
        else "{distribution: log_uniform_values, min: 0.005, max: 0.05}"
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""
name: s
method: {method}
metric: {{name: val/top1_err, goal: minimize}}
parameters:
  optim.lr: {values}
  trainer.max_epochs: {{value: 1}}
command: [python, -m, gmsop.train, head=gap, data.num_workers=2]
""")
    common = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--pruner",
        "none",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "trainer.checkpoint_every_n_steps=1",
        "logger=no_wandb",
        "+callbacks.pace._target_=tests.pace.Pace",
        "+callbacks.pace.seconds=0.15",
        *QUIET,
    ]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    root = tmp_path / "runs" / "s"

    def trials() -> list[dict]:
        return list(csv.DictReader((root / "trials.csv").open()))

    sweeper = start_cli("gmsop.sweep", str(sweep), "--trials", "3", *common, cwd=tmp_path, env=env, session=True)
    _wait_for(lambda: any(root.glob("trial_0001_*/checkpoints/last.ckpt")), what="trial 1's checkpoint", job=sweeper)
    os.killpg(sweeper.pid, sig)
    assert sweeper.wait(timeout=120) == code, _output(sweeper)
    assert [r["state"] for r in trials()] == ["COMPLETE", "INTERRUPTED"]
    (trial_1,) = root.glob("trial_0001_*")
    assert _summary(trial_1)["status"] == "interrupted"

    rerun = run_cli("gmsop.sweep", str(sweep), "--trials", "3", *common, cwd=tmp_path, env=env)
    _ok(rerun)
    assert "trial(s) 1 will continue from their checkpoints" in rerun.stdout
    rows = trials()
    assert [r["state"] for r in rows] == ["COMPLETE", "INTERRUPTED", "COMPLETE", "COMPLETE"]
    assert rows[2]["optim.lr"] == rows[1]["optim.lr"]  # trial 2 is trial 1 continued
    assert Path(_summary(Path(rows[2]["run_dir"]))["resumed_from"]).parts[-3] == trial_1.name
    completed = [float(r["optim.lr"]) for r in rows if r["state"] == "COMPLETE"]
    assert len(set(completed)) == 3  # no point twice
    if method == "grid":
        assert sorted(completed) == [0.01, 0.02, 0.03]
        again = run_cli("gmsop.sweep", str(sweep), "--trials", "5", *common, cwd=tmp_path, env=env)
        _ok(again)
        assert "the grid has 3 points and 0 left to run" in again.stdout and len(trials()) == 4


@pytest.mark.slow
def test_a_full_disk_names_the_cause_once_says_what_is_intact_and_the_run_resumes(tmp_path, monkeypatch):
    """The disk fills up while step 3's checkpoint is written, and summary.json cannot be written
    either (four chained tracebacks before, the cause buried, nothing said): one message names the
    cause, the intact checkpoint (step 2) and the resume command, and the run then resumes."""
    import errno

    import lightning as L

    import gmsop.paths
    from gmsop.run.training import DiskFullError, run_training
    from tests.test_config import compose_train

    full = {"now": False}
    real_replace = gmsop.paths.replace_atomically

    def replace_on_a_full_disk(path, write, before_replace=None):
        if not full["now"]:
            return real_replace(path, write, before_replace)

        def half_then_full(tmp):
            tmp.write_bytes(b"the first blocks")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return real_replace(path, half_then_full, before_replace)

    class FillsUpAtStep3(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            full["now"] = full["now"] or trainer.global_step == 2

    import gmsop.run_folder.checkpoints

    for module in (gmsop.paths, gmsop.run_folder.checkpoints):
        monkeypatch.setattr(module, "replace_atomically", replace_on_a_full_disk)
    common = (
        "head=gap",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "trainer.limit_val_batches=1",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.resume=auto",
        "logger=no_wandb",
        *QUIET,
        f"runs_dir={tmp_path / 'runs'}",
    )
    run_dir = tmp_path / "run"
    with pytest.raises(DiskFullError) as stopped:
        run_training(compose_train(*common), run_dir, [FillsUpAtStep3()])
    message = str(stopped.value)
    assert message.count("No space left on device") == 1 and "no space left on device while writing" in message
    assert "last.ckpt (epoch 0, step 2) is intact" in message and f"trainer.resume={run_dir}" in message
    assert "summary.json could not be written either" in message and not (run_dir / "summary.json").exists()
    assert _step(run_dir / "checkpoints" / "last.ckpt") == 2
    assert not [p for p in run_dir.rglob(".*.tmp-*")]
    full["now"] = False  # space freed
    monkeypatch.undo()
    result = run_training(compose_train(*common), run_dir)
    assert _summary(run_dir)["status"] == "finished" and _summary(run_dir)["global_step"] == STEPS_PER_EPOCH
    assert result.metrics["val/top1_err"] >= 0


@pytest.mark.slow
def test_a_resume_at_another_learning_rate_is_refused_by_its_keys(tmp_path):
    """A resume with another data.batch_size under trainer.resume_allow_changes=true logged and recorded
    the new rate (optim.lr scaled to the batch) while the optimiser went on at the checkpoint's; a
    changed trainer.accumulate_grad_batches (the global batch too) was not even compared."""
    run = tmp_path / "run"
    _ok(_train(tmp_path, *SHORT, "trainer.max_epochs=1", f"hydra.run.dir={run}"))
    for change, named in (
        (("data.batch_size=32", "trainer.resume_allow_changes=true"), "data.batch_size=32 (was 64)"),
        (("trainer.accumulate_grad_batches=2",), "trainer.accumulate_grad_batches=2 (was 1)"),
    ):
        proc = _train(tmp_path, *SHORT, "trainer.max_epochs=2", f"trainer.resume={run}", *change)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "cannot resume" in proc.stderr and "at another learning rate" in proc.stderr and named in proc.stderr
    # (the same rate at another batch still resumes: tests/test_resume.py)


@pytest.mark.slow
def test_a_stop_signal_as_a_finished_run_ends_leaves_exit_code_and_summary_agreeing(tmp_path):
    """A SIGTERM that landed after training had restored the process's handlers killed it (exit 143)
    with summary.json saying "finished"; now the finished run holds it back and exits 0."""
    run = tmp_path / "run"
    script = f"""
import os, signal
from gmsop.run.compose import compose_train
from gmsop.run.training import run_training
cfg = compose_train({[*SHORT, "trainer.max_epochs=1", "logger=no_wandb", f"runs_dir={tmp_path / 'runs'}"]!r})
run_training(cfg, __import__("pathlib").Path({str(run)!r}), hold_signals_after=True)  # (as gmsop.train)
os.kill(os.getpid(), signal.SIGTERM)  # as the run ends
print("ended")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "ended" in proc.stdout, proc.stderr[-3000:]
    assert _summary(run)["status"] == "finished"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_unsaved_and_the_summary_names_the_step_it_resumes_from(tmp_path):
    run = tmp_path / "run"
    job = _start(tmp_path, *SHORT, "trainer.max_epochs=100", "trainer.checkpoint_every_n_steps=2",
                 f"hydra.run.dir={run}")  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    _wait_for(lambda: last.is_file() and _step(last) >= 3, what="a checkpoint at step 3 or later", job=job)
    job.send_signal(signal.SIGINT)
    job.send_signal(signal.SIGINT)  # the second press: stop at once, unsaved
    assert job.wait(timeout=120) == 130, _output(job)[-3000:]
    summary = _summary(run)
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == "SIGINT"
    assert summary["global_step"] == _step(last) <= summary["stopped_at_step"]
