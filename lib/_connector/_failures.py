"""psycopg's errors as Procrastinate's ConnectorException: the server's reason on one line.

psycopg's message of an error raised inside a PL/pgSQL function ends with its CONTEXT, the
SQL of the statement (all of procrastinate_defer_jobs_v1's INSERT, with the values): only
the primary message and the condition's name are kept, and psycopg's error stays the cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg
from procrastinate import exceptions, sync_psycopg_connector

from dawdle._connector._pooler import PREPARE_HINT, prepared_statement_lost
from dawdle._errors import DatabaseError, DawdleError, UniqueViolation

# A primary message can quote a value (an enum label, a too long input): kept this short.
MAX_REASON_CHARS: Final = 300

# Undefined objects that the schema of Procrastinate or dawdle would have created.
_UNDEFINED = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedObject,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedColumn,
)
_SCHEMA_NAME = re.compile(r"\b(?:procrastinate|dawdle)_\w+")
_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")

SCHEMA_HINT: Final = "the schema is missing or outdated: run `dawdle schema --apply`"


def condition_name(exc: psycopg.Error) -> str | None:
    """PostgreSQL's name of the error's SQLSTATE (`undefined_table`), or None if it has none."""
    if not exc.sqlstate:
        return None
    try:
        error_class = psycopg.errors.lookup(exc.sqlstate)
    except KeyError:
        return f"SQLSTATE {exc.sqlstate}"
    return _WORD_START.sub("_", error_class.__name__).lower()


def reason(exc: psycopg.Error) -> str:
    """The server's primary message and condition on one line, with a hint if the schema lacks."""
    primary = exc.diag.message_primary or (str(exc).strip().splitlines() or [""])[0]
    text = " ".join(primary.split()) or type(exc).__name__
    if len(text) > MAX_REASON_CHARS:
        text = f"{text[:MAX_REASON_CHARS]}..."
    condition = condition_name(exc)
    if condition is not None:
        text = f"{text} ({condition})"
    if isinstance(exc, _UNDEFINED) and _SCHEMA_NAME.search(primary):
        text = f"{text}: {SCHEMA_HINT}"
    elif prepared_statement_lost(exc):
        text = f"{text}: {PREPARE_HINT}"
    return text


@contextmanager
def database_errors() -> Iterator[None]:
    """Raise psycopg's errors as Procrastinate would, typed as it does, with `reason()`.

    UniqueViolation keeps Procrastinate's `constraint_name` and `queueing_lock` (its job
    manager turns a queueing lock's into AlreadyEnqueued); others are ConnectorExceptions.
    """
    try:
        with sync_psycopg_connector.wrap_exceptions():
            yield
    except exceptions.ConnectorException as exc:
        cause = exc.__cause__
        if isinstance(exc, DawdleError) or not isinstance(cause, psycopg.Error):
            # Said already (DatabaseUnavailable, PoolTimeout), or Procrastinate's own (NoResult).
            raise
        if isinstance(exc, exceptions.UniqueViolation):
            raise UniqueViolation(
                reason(cause), constraint_name=exc.constraint_name, queueing_lock=exc.queueing_lock
            ) from cause
        raise DatabaseError(reason(cause)) from cause
