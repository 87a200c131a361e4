"""Run folders: unique names, an exclusive lock while a process writes one, and no reuse by accident.

A run folder belongs to one training. Its default name is the start time plus a random
suffix (`runs/NAME/2026-11-25_18-30-12_3fa9c1`), so runs started in the same second never
share a folder. The process training into a folder (or continuing a run from it) holds an
exclusive lock on `FOLDER/.run.lock` (released by the kernel even after kill -9), so a second
process can neither write into it nor continue the same run at the same time.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

from gmsop.errors import UserError
from gmsop.paths import hold_lock_descriptor, release_lock_descriptor, remove_stale_temporaries
from gmsop.run_folder.layout import LOCK_FILE, RUN_TRACES, checkpoint_files


class RunFolderError(UserError, RuntimeError):
    """A run folder is in use by another process, or already holds another run."""


class RunLock:
    """An exclusive, non-blocking lock on folder/.run.lock, held until release() or process exit."""

    def __init__(self, folder: Path, purpose: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        try:  # whether this process makes the file: only then may it remove it (release(forget=True))
            self._fd: Optional[int] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self.created = True
        except FileExistsError:
            self._fd = os.open(path, os.O_RDWR)
            self.created = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderError(
                f"run folder {self.folder} is in use by {holder}; cannot {purpose}. Wait for it to finish, "
                "or start this run in another folder (leave hydra.run.dir at its default for a unique one)"
            ) from None
        hold_lock_descriptor(self._fd)  # closed in forked children (DataLoader workers)
        # who held it before (a process that trained here and was killed), else ""
        self.previous_holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} ({purpose})\n".encode(), 0)
        remove_stale_temporaries(self.folder)  # we hold the lock: no live writer owns them

    def release(self, forget: bool = False) -> None:
        """Unlock; `forget`: also remove the lock file if this process made it (a process that
        stopped on bad input before writing anything leaves no trace of a run; a lock file that was
        there before, left by a run that was killed, stays: the folder holds that run)."""
        if forget and self._fd is not None and self.created:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        if self._fd is not None:
            release_lock_descriptor(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(folder: Path) -> bool:
    """Whether a live process holds folder's run lock."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def run_traces(folder: Path, lock: Optional[RunLock] = None) -> list[str]:
    """What in folder shows a training ran there: checkpoints, RUN_TRACES, and (given the lock this
    process took on it) a lock file another process made."""
    folder = Path(folder)
    found = [str(p.relative_to(folder)) for p in checkpoint_files(folder)]
    found += [name for name in RUN_TRACES if (folder / name).is_file()]
    if lock is not None and lock.folder == folder and not lock.created:
        found.append(f"{LOCK_FILE} ({lock.previous_holder or 'made by a process that stopped before writing to it'})")
    return found


def require_fresh(folder: Path, lock: Optional[RunLock] = None) -> None:
    """Refuse to start a new run in a folder that holds another run (it would mix or resume it)."""
    traces = run_traces(folder, lock)
    if traces:
        raise RunFolderError(
            f"run folder {folder} already holds a run ({', '.join(traces)}). To continue that run: "
            f"trainer.resume={folder} (or trainer.resume=auto with this hydra.run.dir). To start a new one, "
            "leave hydra.run.dir at its default (a unique folder) or name an empty folder"
        )
