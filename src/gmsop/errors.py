"""The error type every entry point reports as a message (no traceback) with exit status 2."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input or state that the user can fix; the message names the value and what is allowed."""


class MissingExtraError(UserError):
    """An optional feature's package is not installed."""


def require_extra(module: str, extra: str, feature: str) -> None:
    """Fail (MissingExtraError) before anything is written when `feature` needs `module`, which the
    optional dependency group `extra` of this package installs, and it cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{feature} needs the optional package {module!r}, which is not installed ({err}); "
            f"install it with: pip install 'gmsop[{extra}]'"
        ) from None


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
