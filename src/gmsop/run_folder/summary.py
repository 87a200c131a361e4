"""summary.json: what a run was, how it ended (finished / interrupted / failed) and its metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from gmsop.paths import write_text_atomic
from gmsop.run_folder.layout import SUMMARY

STATUSES = ("finished", "interrupted", "failed")


def write_summary(
    run_dir: Path, fields: Mapping[str, Any], status: str, reason: Optional[str] = None, error: Optional[str] = None
) -> None:
    """Write RUN/summary.json atomically: `fields` (what ran and its metrics) and how it ended; an
    interrupted run says what stopped it (`reason`) and how to resume it, a failed one its `error`."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: one of {', '.join(STATUSES)}")
    summary = {"status": status, **fields}
    if status == "interrupted":
        summary["interrupted_by"] = reason
        summary["resume_with"] = f"trainer.resume={run_dir}"
    if error:
        summary["error"] = error
    write_text_atomic(Path(run_dir) / SUMMARY, json.dumps(summary, indent=2))


def read_summary(run_dir: Path) -> Optional[dict[str, Any]]:
    """A run folder's summary.json, or None if it has none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
