"""Errors raised by data modules."""


class MissingDataError(FileNotFoundError):
    """A data folder or file is missing; the message says what is expected and how to get it."""
