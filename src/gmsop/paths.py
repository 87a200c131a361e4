"""Where the toolkit finds its configs and writes its runs."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(os.environ.get("GMSOP_CONFIG_DIR", REPO_ROOT / "configs")).resolve()


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV table (header, then rows) atomically, like write_text_atomic."""
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    write_text_atomic(path, buf.getvalue())
