"""Errors of the configuration database; each is a one-line message for ``pes`` (exit status 2)."""

from __future__ import annotations

from ..errors import PesError
from .validation import InvalidRecord


class StoreError(PesError):
    """The store cannot be used as it is (corrupt, unreadable, full disk, busy)."""


class EmbeddedStoreError(StoreError):
    """The embedded store's files cannot be used (corrupt, unreadable, or locked by another process)."""


class EmbeddedStoreLocked(EmbeddedStoreError):
    """Another process holds the embedded LaunchPad, or has been writing for longer than lock_timeout_s."""


class DatabaseUnavailable(StoreError):
    """The configured MongoDB server cannot be reached or refused the credentials."""


class NotFound(PesError, KeyError):
    """No document with the given id."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class QueryError(PesError, ValueError):
    """An unknown query field or a malformed filter value."""


class CalculationConflict(InvalidRecord):
    """A different result for a configuration and settings hash that already has one (no ``replace``)."""


class OutlierRecord(InvalidRecord):
    """An energy or force outside the physically plausible range (no ``allow_outliers``)."""


__all__ = [
    "CalculationConflict",
    "DatabaseUnavailable",
    "EmbeddedStoreError",
    "EmbeddedStoreLocked",
    "InvalidRecord",
    "NotFound",
    "OutlierRecord",
    "QueryError",
    "StoreError",
]
