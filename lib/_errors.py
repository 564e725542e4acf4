"""dawdle's exceptions: one root, families grouped by what the caller can do about them."""

from __future__ import annotations

from procrastinate.exceptions import ConnectorException
from procrastinate.exceptions import UniqueViolation as ProcrastinateUniqueViolation


class DawdleError(Exception):
    """Root of every exception dawdle raises on its own account."""


class ConfigurationError(DawdleError, ValueError):
    """A value given to dawdle is invalid; the message names it. Fix the call, do not retry."""


class DatabaseUnavailable(DawdleError, ConnectorException):  # noqa: N818 (reads as a state)
    """PostgreSQL cannot be reached: the message names host and database, never the password."""


class PoolTimeout(DawdleError, ConnectorException):  # noqa: N818 (psycopg_pool's name)
    """No pooled connection came free within the connector's `timeout`; the message says so.

    It names the wait and the pool's size: retry later, raise `max_size`, or hold
    connections for less time.
    """


class DatabaseError(DawdleError, ConnectorException):
    """PostgreSQL failed a query: the server's reason and SQLSTATE name, never SQL text.

    psycopg's error is the `__cause__`; callers catch Procrastinate's `ConnectorException`.
    """


class UniqueViolation(DatabaseError, ProcrastinateUniqueViolation):  # noqa: N818 (its name)
    """Procrastinate's UniqueViolation (its `constraint_name`, `queueing_lock`), one line."""


class SchemaOutdated(DawdleError):  # noqa: N818 (reads as a state)
    """The database has an older Procrastinate schema: apply Procrastinate's migrations."""


class JobTimeout(DawdleError, TimeoutError):  # noqa: N818 (reads as an event, like TimeoutError)
    """A job ran past its task's `timeout=`; it was cancelled and its retry policy decides."""


class UnsupportedValue(DawdleError, ValueError):  # noqa: N818 (reads as a state)
    """A value PostgreSQL cannot store or dawdle refuses to send; the message names it.

    NaN, Infinity or NUL in jsonb; a job argument over `max_payload_bytes`; a queue name
    too long for its column.
    """


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside `exc` and its nested exception groups, or `exc` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
