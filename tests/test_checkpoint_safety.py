"""Checkpoints are trusted only when intact, and only as data: a digest recorded as each is written,
checked by every reader (resume, eval, export, the test stage, Lightning's restores); every load
with weights_only=True, so a file whose pickle would run code is refused and nothing runs."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from gmsop.callbacks.checkpoints import AtomicCheckpointIO
from gmsop.models.classifier import SecondOrderClassifier
from gmsop.run_folder import CheckpointError, read_checkpoint
from gmsop.run_folder.checkpoints import digest_file, save_checkpoint_file
from tests.conftest import run_cli

MINIMAL = {"hyper_parameters": {"model": {}, "head": {"name": "gap"}}, "state_dict": {"w": torch.ones(3)}}


def damage_in_place(path: Path) -> None:
    """Overwrite a block of bytes in the middle of `path`; its size stays the same."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        block = f.read(64)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in block))
    assert path.stat().st_size == size


def test_a_checkpoint_damaged_in_place_is_refused_by_every_reader(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint_file(MINIMAL, path)
    assert json.loads(digest_file(path).read_text())["sha256"]
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    damage_in_place(path)
    for read in (read_checkpoint, AtomicCheckpointIO().load_checkpoint, SecondOrderClassifier.load_from_checkpoint):
        with pytest.raises(CheckpointError, match=r"last\.ckpt is damaged: its bytes differ"):
            read(path)


def test_a_kill_between_recording_the_digest_and_the_rename_leaves_a_file_that_still_verifies(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint_file(MINIMAL, path)
    replace = os.replace

    class Killed(BaseException):
        pass

    def replace_then_die_after_the_digest(src, dst):
        replace(src, dst)
        if Path(dst) == digest_file(path):  # the new file's digest is recorded ...
            raise Killed  # ... and the process dies before the checkpoint's own rename

    monkeypatch.setattr(os, "replace", replace_then_die_after_the_digest)
    with pytest.raises(Killed):
        save_checkpoint_file({**MINIMAL, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))  # the old file, intact
    save_checkpoint_file({**MINIMAL, "state_dict": {"w": torch.zeros(3)}}, path)  # and the next save is checked
    damage_in_place(path)
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(path)


def test_a_checkpoint_without_a_digest_loads_with_a_note(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save(MINIMAL, path)  # today's format before digests
    with pytest.warns(UserWarning, match="no digest"):
        assert "state_dict" in read_checkpoint(path)


class RunsCode:
    """What a hostile checkpoint holds: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A gmsop-shaped checkpoint whose pickle would create `marker`."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "hostile.ckpt"
    torch.save({**MINIMAL, "extra": RunsCode(f"touch {marker}")}, path)
    return path, marker


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (no digest)
        for read in (read_checkpoint, AtomicCheckpointIO().load_checkpoint):
            with pytest.raises(CheckpointError, match=r"refused .*hostile\.ckpt.*system"):
                read(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # (the file does run code when loaded the unsafe way)
    assert marker.exists()


@pytest.mark.slow
def test_entry_points_refuse_a_hostile_checkpoint_and_run_nothing(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    for module, *args in (
        ("gmsop.eval", f"ckpt_path={path}"),
        ("gmsop.export", str(path), str(tmp_path / "backbone.safetensors")),
        ("gmsop.train", f"trainer.resume={path}", "head=gap", f"runs_dir={tmp_path / 'runs'}"),
    ):
        proc = run_cli(module, *args, cwd=tmp_path)
        assert proc.returncode == 2, (module, proc.stderr[-3000:])
        assert "refused" in proc.stderr and "hostile.ckpt" in proc.stderr, (module, proc.stderr[-3000:])
        assert not marker.exists(), module


def test_passwords_in_urls_are_masked():
    from gmsop.redact import redact_passwords

    assert redact_passwords("postgresql://alice:s3cr@t@db:5432/x") == "postgresql://alice:***@db:5432/x"
    assert redact_passwords({"a": ["https://u:tok@mlflow:5000", "sqlite:///runs/optuna.db", "http://h/x"]}) == {
        "a": ["https://u:***@mlflow:5000", "sqlite:///runs/optuna.db", "http://h/x"]
    }


@pytest.mark.slow
def test_a_password_on_the_command_line_is_written_nowhere_in_the_run_folder(tmp_path):
    """A tracking URL's password (here for a disabled MLflow logger, so no server is needed) reached
    the saved config, every checkpoint and the W&B run's config."""
    secret = "s3cretPassw0rd"
    run = tmp_path / "run"
    proc = run_cli(
        "gmsop.train", "head=gap", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        f"logger.mlflow.tracking_uri=postgresql://alice:{secret}@db.example:5432/mlflow", f"hydra.run.dir={run}",
        f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "last.ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    assert "postgresql://alice:***@db.example" in (run / ".hydra" / "config.yaml").read_text()
    leaked = [str(p.relative_to(run)) for p in files if secret.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert secret not in proc.stdout + proc.stderr
