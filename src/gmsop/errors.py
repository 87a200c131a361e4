"""The error type every entry point reports as a message (no traceback) with exit status 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input or state that the user can fix; the message names the value and what is allowed."""


def exit_on_user_error(fn: F) -> F:
    """Run fn; a UserError is printed as `error: MESSAGE` to stderr and the process exits with 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
