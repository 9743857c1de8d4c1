"""Errors that carry a hint telling the user what to do next."""

from __future__ import annotations


class UrbangeoError(Exception):
    """An error caused by the user's input or environment, with an actionable hint.

    The CLI prints ``message`` and ``hint`` without a traceback; library users get a normal
    exception whose ``str`` contains both.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n{hint}")


class InputError(UrbangeoError):
    """Bad input data or arguments (an unreadable file, an empty boundary, a bad value)."""


class OutputError(UrbangeoError):
    """An output that cannot be written, or would be overwritten without permission."""


class MissingLayerError(UrbangeoError):
    """A GeoPackage lacks a layer that an earlier stage should have written."""


class MissingExtraError(UrbangeoError, ImportError):
    """An optional dependency is not installed."""


class UrbangeoWarning(UserWarning):
    """Something the user should know that does not stop the work (a repaired geometry...)."""
