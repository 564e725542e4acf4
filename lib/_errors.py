"""dawdle's exceptions: one root, families grouped by what the caller can do about them."""

from __future__ import annotations

from procrastinate.exceptions import ConnectorException


class DawdleError(Exception):
    """Root of every exception dawdle raises on its own account."""


class ConfigurationError(DawdleError, ValueError):
    """A value given to dawdle is invalid; the message names it. Fix the call, do not retry."""


class DatabaseUnavailable(DawdleError, ConnectorException):  # noqa: N818 (reads as a state)
    """PostgreSQL cannot be reached: the message names host and database, never the password."""


class SchemaOutdated(DawdleError):  # noqa: N818 (reads as a state)
    """The database has an older Procrastinate schema: apply Procrastinate's migrations."""


class JobTimeout(DawdleError, TimeoutError):  # noqa: N818 (reads as an event, like TimeoutError)
    """A job ran past its task's `timeout=`; it was cancelled and its retry policy decides."""


class UnsupportedValue(DawdleError, ValueError):  # noqa: N818 (reads as a state)
    """A value cannot be stored in PostgreSQL's jsonb (NaN, Infinity, NUL); the message names it."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc` and its nested exception groups, or `exc` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
