"""A library that only an action imports, when it runs (a heavy SDK, an optional dependency): a
worker restarted since has not loaded it when it replays the workflow that got its error."""

from __future__ import annotations


class LibError(Exception):
    """An error of the library's, with a field of its own."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code
