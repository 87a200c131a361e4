"""Credentials stay on the command line: passwords in URLs (a PostgreSQL study storage, an MLflow
tracking server) are masked in everything a run writes or hands to a logger."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^/\s]+)@")
MASK = "***"


def redact_passwords(value: Any) -> Any:
    """`value` (a string, or mappings and lists of them) with every URL's password replaced by ***."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", value)
    if isinstance(value, Mapping):
        return {k: redact_passwords(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_passwords(v) for v in value)
    return value


@contextlib.contextmanager
def command_line_redacted() -> Iterator[None]:
    """sys.argv with passwords masked for the time of the block: for libraries that record the
    command line themselves (W&B's run metadata), once it has been parsed."""
    original = list(sys.argv)
    sys.argv[:] = redact_passwords(original)
    try:
        yield
    finally:
        sys.argv[:] = original
