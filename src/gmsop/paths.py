"""Where the toolkit finds its configs and writes its runs."""

from __future__ import annotations

import csv
import fcntl
import functools
import io
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

# The package's configs: in a clone, src/gmsop/conf links to configs/ (whose experiment/ links to
# experiments/); an installed package or wheel holds the files themselves. GMSOP_CONFIG_DIR
# replaces the whole folder; to add experiments of your own, see the README (--config-dir).
CONFIG_DIR = Path(os.environ.get("GMSOP_CONFIG_DIR", Path(__file__).parent / "conf")).resolve()


@functools.cache
def run_uid() -> str:
    """A random suffix for run folder names, fixed for the process (Hydra resolves the name more than once)."""
    return secrets.token_hex(3)


TMP_MARK = ".tmp-"  # temporary files are named .NAME.tmp-PID


def temporary_name(path: Path) -> Path:
    """Where `path` is staged while being written: same folder (so the rename is atomic), one per process."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def replace_atomically(
    path: Path, write: Callable[[Path], Any], before_replace: Optional[Callable[[Path], Any]] = None
) -> None:
    """Call write(tmp_path), fsync it, then rename it over path: a reader, or a process that
    starts after a kill -9 at any moment, sees the old file or the new one, never half.
    `before_replace(tmp_path)` runs once the new file is on disk, before the rename (e.g. to
    record its digest)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files left in folder (recursively) by a process killed mid-write.

    Call only while holding the folder's run lock: then no live writer owns them.
    """
    removed = []
    for tmp in Path(folder).rglob(f".*{TMP_MARK}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Write text so a reader never sees half a file (see replace_atomically)."""
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV table (header, then rows) atomically, like write_text_atomic."""
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    write_text_atomic(path, buf.getvalue())


_LOCKS: set[int] = set()  # descriptors of the flocks this process holds (held_lock, run locks)


def _close_inherited_locks() -> None:
    """In a child made by fork (a DataLoader worker), close the descriptors of the parent's locks:
    an flock belongs to the open file, which a child shares, so a worker still alive after its run
    ended (an exception during validation leaves the loader's processes running) kept a run folder
    locked, and resuming it in the same process failed with "in use"."""
    for fd in _LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def hold_lock_descriptor(fd: int) -> None:
    """Record a descriptor this process holds an flock on (closed in forked children)."""
    _LOCKS.add(fd)


def release_lock_descriptor(fd: int) -> None:
    """Close a descriptor recorded by hold_lock_descriptor, which drops its flock (in a forked child,
    where it is closed already, nothing)."""
    if fd in _LOCKS:
        _LOCKS.remove(fd)
        os.close(fd)


@contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Wait for an exclusive lock on `path` (created if missing) and hold it inside the block: for
    files several runs share and may create at once, such as the MLflow database or a data cache
    (released by the kernel even after kill -9)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    hold_lock_descriptor(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        release_lock_descriptor(fd)
