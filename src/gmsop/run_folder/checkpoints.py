"""A run folder's checkpoints: written with their digest, read only when intact and only as data.

- Every checkpoint file is written atomically (gmsop.paths.replace_atomically) with a digest beside
  it (`NAME.ckpt.sha256`): the SHA-256 of the bytes as they are on disk, recorded before the rename
  together with the digest of the file it replaces (a kill between the two renames leaves the old
  file, which then still matches). Reading checks it: a file damaged after it was written (bytes
  overwritten in place, a bad copy) is refused, naming the file, and a resume goes on from the
  newest intact checkpoint. Checkpoints written before digests existed load with a warning.
- Files cannot run code: every load is `torch.load(..., weights_only=True)` (tensors and plain
  values only), through `load_checkpoint_file`, which Lightning's own restores use too
  (gmsop.callbacks.checkpoints.AtomicCheckpointIO). A file whose pickle needs anything else is
  refused, naming what it holds.
- A clear error naming the file for anything that is not a gmsop checkpoint (empty, cut short,
  another program's), and the newest one that loads.

Every checkpoint records the run's config, folder and W&B id under RECORD_KEY, so a resume knows
which W&B run it continues and can refuse a config that does not fit the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from gmsop.errors import UserError
from gmsop.paths import replace_atomically
from gmsop.run_folder.layout import BEST, CHECKPOINT_DIR, checkpoint_files

RECORD_KEY = "gmsop"
DIGEST_SUFFIX = ".sha256"


class CheckpointError(UserError, ValueError):
    """A file is not a readable gmsop checkpoint, or does not fit the config or data."""


def digest_file(ckpt: Path) -> Path:
    """Where the digest of checkpoint `ckpt` is kept: NAME.ckpt.sha256 beside it."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + DIGEST_SUFFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint_file(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a checkpoint file through write(tmp) atomically, with its digest recorded beside it
    (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def record_digest(tmp: Path) -> None:
        replaces = sha256_of(path) if path.is_file() else None
        record = {"sha256": sha256_of(tmp), "replaces": replaces, "file": path.name}
        replace_atomically(digest_file(path), lambda t: t.write_text(json.dumps(record) + "\n"))

    replace_atomically(path, write, before_replace=record_digest)


def save_checkpoint_file(checkpoint: Mapping[str, Any], path: Path) -> None:
    """torch.save `checkpoint` to `path` with its digest (write_checkpoint_file)."""
    write_checkpoint_file(path, lambda tmp: torch.save(checkpoint, tmp))


def copy_checkpoint_file(source: Path, target: Path) -> None:
    """Copy a checkpoint, once it is verified intact, with its digest."""
    verify_checkpoint_file(source)
    write_checkpoint_file(target, lambda tmp: shutil.copyfile(source, tmp))


def remove_checkpoint_file(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    digest_file(path).unlink(missing_ok=True)


def verify_checkpoint_file(path: Path) -> bool:
    """Whether `path` matches the digest recorded when it was written: True, or False when it has no
    digest (written before digests existed; warned about); CheckpointError when it does not match."""
    path = Path(path)
    record_path = digest_file(path)
    if not record_path.is_file():
        warnings.warn(
            f"{path} has no digest ({record_path.name}): written by an older version or copied without it, "
            "so it cannot be checked for damage; loading it unverified",
            stacklevel=3,
        )
        return False
    try:
        record = json.loads(record_path.read_text())
        expected = {record["sha256"], record.get("replaces")} - {None}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path}: its digest file {record_path} is unreadable ({e}); the checkpoint is not trusted"
        ) from None
    actual = sha256_of(path)
    if actual not in expected:
        raise CheckpointError(
            f"{path} is damaged: its bytes differ from those written (SHA-256 {actual[:16]}..., recorded "
            f"{record['sha256'][:16]}... in {record_path.name}); it is not loaded"
        )
    return True


def load_checkpoint_file(path: Path, map_location: Any = "cpu") -> dict:
    """torch.load a checkpoint file once verified (verify_checkpoint_file), with weights_only=True,
    or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was not written completely")
    verify_checkpoint_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e).lower() and "unsupported global" not in str(e).lower():
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (UnpicklingError: {e})") from None
        raise CheckpointError(
            f"refused {path}: it holds objects other than tensors and plain values ({_what_it_holds(e)}), and "
            "loading those would run code from the file. Checkpoints written by this toolkit hold none; load "
            "only files you trust, and re-save their state_dict with plain values"
        ) from None
    except Exception as e:  # (torch's weights-only unpickler fails on garbage in many ways: IndexError, KeyError, ...)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _what_it_holds(error: pickle.UnpicklingError) -> str:
    """The global torch refused, from its message (e.g. "GLOBAL posix.system"), else the message's first line."""
    for line in str(error).splitlines():
        if "GLOBAL" in line or "Unsupported global" in line:
            return line.strip().rstrip(".")
    return str(error).splitlines()[0][:200]


def read_checkpoint(path: Path, for_resume: bool = False) -> dict:
    """Load a gmsop checkpoint on the CPU (verified, as data only), or raise CheckpointError naming
    the file and the problem."""
    path = Path(path)
    ckpt = load_checkpoint_file(path)
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
