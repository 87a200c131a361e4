"""Errors raised by data modules."""

from gmsop.errors import UserError


class MissingDataError(UserError, FileNotFoundError):
    """A data folder or file is missing; the message says what is expected and how to get it."""
