"""Reading a run folder's checkpoints: a clear error naming the file for anything that is not a
gmsop checkpoint (empty, cut short, another program's), and the newest one that loads.

Every checkpoint records the run's config, folder and W&B id under RECORD_KEY, so a resume knows
which W&B run it continues and can refuse a config that does not fit the checkpoint.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch

from gmsop.errors import UserError
from gmsop.run_folder.layout import BEST, CHECKPOINT_DIR, checkpoint_files

RECORD_KEY = "gmsop"


class CheckpointError(UserError, ValueError):
    """A file is not a readable gmsop checkpoint, or does not fit the config or data."""


def read_checkpoint(path: Path, for_resume: bool = False) -> dict:
    """Load a gmsop checkpoint on the CPU, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was not written completely")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (
        EOFError,
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        AttributeError,
        ModuleNotFoundError,
    ) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, Mapping) or not {"model", "head"} <= set(hparams) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a gmsop training checkpoint (no model/head hyperparameters and "
            "state_dict); for weights of another model use model.pretrained_file"
        )
    if for_resume and not {"loops", "optimizer_states"} <= set(ckpt):
        raise CheckpointError(f"{path} holds weights but no training state (loops, optimizer); it cannot be resumed")
    return ckpt


def readable_checkpoint(run_dir: Path) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint of a run folder that loads, with its contents; None if it has none.

    last.ckpt or Lightning's SLURM hpc_ckpt_N.ckpt, newest first; if none of those loads (a damaged
    disk, a partly copied folder), best.ckpt, which holds the full training state of its epoch:
    the epochs after it are trained again, with a warning that names the unreadable files.
    CheckpointError (naming each file and its problem) when the folder's checkpoints all fail."""
    candidates = sorted(checkpoint_files(run_dir, resumable_only=True), key=lambda p: p.stat().st_mtime, reverse=True)
    best = Path(run_dir) / CHECKPOINT_DIR / f"{BEST}.ckpt"
    candidates += [best] if best.is_file() else []
    problems = []
    for ckpt in candidates:
        try:
            checkpoint = read_checkpoint(ckpt, for_resume=True)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(
                "; ".join(problems) + f". Continuing from {ckpt} (epoch {checkpoint.get('epoch')}, step "
                f"{checkpoint.get('global_step')}): the steps after it are trained again",
                stacklevel=2,
            )
        return ckpt, checkpoint
    if problems:
        raise CheckpointError(f"no checkpoint in {run_dir} can be resumed: " + "; ".join(problems))
    return None
