"""Find the checkpoint (and W&B run id) to resume from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

LAST_CKPT = Path("checkpoints") / "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"


class ResumeError(FileNotFoundError):
    """No checkpoint at the place trainer.resume names."""


def resolve_resume(resume: Optional[str], experiment_runs: Path) -> tuple[Optional[Path], Optional[str]]:
    """trainer.resume -> (checkpoint path, W&B run id to continue, if the run saved one).

    `resume` is a .ckpt file, a run folder (its checkpoints/last.ckpt), or "latest": the
    newest run folder of this experiment (under runs_dir/name) that has a last.ckpt.
    """
    if not resume:
        return None, None
    if resume == "latest":
        candidates = sorted(experiment_runs.glob(f"**/{LAST_CKPT}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ResumeError(f"trainer.resume=latest: no {LAST_CKPT} under {experiment_runs}")
        ckpt = candidates[-1]
    else:
        path = Path(resume).expanduser()
        ckpt = path / LAST_CKPT if path.is_dir() else path
        if not ckpt.is_file():
            raise ResumeError(f"trainer.resume={resume}: no checkpoint at {ckpt} (give a .ckpt, a run folder, or 'latest')")
    id_file = run_folder_of(ckpt) / WANDB_ID_FILE
    return ckpt, (id_file.read_text().strip() if id_file.is_file() else None)


def run_folder_of(ckpt: Path) -> Path:
    """The run folder a checkpoint was saved in (RUN/checkpoints/NAME.ckpt)."""
    return ckpt.parent.parent
